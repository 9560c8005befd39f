#!/bin/bash
# On the device machine (issue 13, about BUDGET_S seconds, 60 advised): bash benchmarks/gpu_logits.sh 60
# H2O's attention kernel that also writes its fp32 logits against plain decode at 10 shapes, and
# ALISA's gathered one against the gathered kernel without logits at 5 (bench_floor.py
# --only-logits), written to $OUT/logits/TAG-floor-logits.jsonl; prints the ratios and the
# memory.kernel_efficiency.attention_logits line last.
budget=${1:-60}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh logits
timeout $(( $(left) - 5 )) python3 benchmarks/bench_floor.py --only-logits --out $dir/$tag-floor-logits.jsonl 2>&1 \
  | grep -v -i warn | tail -3
python3 benchmarks/bench_floor.py --fit $dir/$tag-floor-logits.jsonl --hw $tag 2>&1 | tail -18 | cut -c1-300
