#!/bin/bash
# On the device machine (issue 19, about BUDGET_S seconds, 150 advised): bash benchmarks/gpu_kernels.sh 150
# bench_kernels.py's whole grid (dense against SDPA at batch 1-32 x 4k-128k, the sparse kernels at
# 128k, among them ALISA's list: half random rows, half the last rows), written to
# $OUT/kernels/TAG-kernels-2.jsonl; prints its table and the gather efficiency it gives last.
budget=${1:-150}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh kernels
timeout $(( $(left) - 5 )) python3 benchmarks/bench_kernels.py --out $dir/$tag-kernels-2.jsonl 2>&1 | grep -v -i warn | tail -40
python3 benchmarks/bench_kernels.py --fit $dir/$tag-kernels-2.jsonl --hw $tag --launch benchmarks/results/$tag-launch.jsonl 2>&1 | tail -1 | cut -c1-400
