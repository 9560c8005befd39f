# On the device machine, one call (< 8 minutes): the checks and measurements of issue 14.
#   bash benchmarks/gpu_issue14.sh
# Writes under $OUT, each file named after the device (h100, h200):
#   TAG-issue14-tests.log        GPU tests: decode backends of every method x code-path option,
#                                ALISA INT8 in-kernel, GPU-gathered offload, the int8/host-gather
#                                kernels on CUDA
#   TAG-pcie.jsonl               bench_pcie.py: pinned copies by size, zero-copy gathers by row size
#   TAG-alisa-int8.jsonl         ALISA kv_bits=8 step latency, contexts x batches (8 layers)
#   TAG-alisa-int8-ncu.jsonl     the same under Nsight Compute (HBM bytes), 2 configurations
#   TAG-offload.jsonl            dense/sparq/quest/alisa/tidaldecode at offload 0.25, 0.5, 0.9 (4 layers)
# and prints, last, kvsim's error against each file (kvsim validate) and the link curves fitted.
. benchmarks/gpu_setup.sh
tag=$(python3 -m kvsim.runtime.environment)
run() { local limit=$1; shift; timeout "$limit" "$@" 2>&1 | grep -v -i warn | tail -${TAIL:-6}; }
sweep() { run "$@" --models llama-3.1-8b --steps 8 --warmup 2; }

echo "== tests"
timeout 130 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_backends_gpu.py \
  "tests/gpu/test_runtime_gpu.py::test_offload_over_pinned_memory_counts_bytes" \
  tests/test_kernels_int8_probs.py tests/test_kernels_host_gather.py tests/test_kernels_int8_rows.py > $OUT/$tag-issue14-tests.log 2>&1
grep -E "passed|failed|error" $OUT/$tag-issue14-tests.log | tail -3

echo "== pcie"
run 40 python3 benchmarks/bench_pcie.py --out $OUT/$tag-pcie.jsonl --hw $tag

echo "== alisa int8"
sweep 75 python3 benchmarks/measure_sweep.py --out $OUT/$tag-alisa-int8.jsonl --methods alisa \
  --param kv_bits=8 --seqs 16384,49152,98304 --batches 1,4,8 --layers 8 --budget-s 60
TAIL=3 sweep 70 python3 benchmarks/measure_sweep.py --ncu --out $OUT/$tag-alisa-int8-ncu.jsonl \
  --methods alisa --param kv_bits=8 --seqs 49152,98304 --batches 4 --layers 2 --budget-s 40

echo "== offload"
for f in 0.25 0.5 0.9; do
  TAIL=2 sweep 40 python3 benchmarks/measure_sweep.py --out $OUT/$tag-offload.jsonl \
    --methods dense,sparq,quest,alisa,tidaldecode --offload $f --seqs 16384,65536 --batches 4 --layers 4 --budget-s 25
done

ls $OUT
echo "== summary"
python3 benchmarks/bench_pcie.py --fit $OUT/$tag-pcie.jsonl --hw $tag --yaml --profile-out /tmp/$tag-link.yaml 2>&1 | cut -c1-400
for f in alisa-int8 alisa-int8-ncu offload; do
  [ -s $OUT/$tag-$f.jsonl ] && python3 -m kvsim validate $OUT/$tag-$f.jsonl 2>&1 | tail -8
done
echo "offload, predicted with the link curves just measured:"
[ -s /tmp/$tag-link.yaml ] && python3 -m kvsim validate --hw /tmp/$tag-link.yaml $OUT/$tag-offload.jsonl 2>&1 | tail -7
