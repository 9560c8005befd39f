# On the device machine: kernel benchmark, then the method sweep from scratch (resuming past
# CUDA errors). Usage: bash benchmarks/gpu_all.sh SWEEP_SECONDS
. benchmarks/gpu_setup.sh
timeout 150 python3 benchmarks/bench_kernels.py --out $OUT/h100-kernels.jsonl 2>&1 | tail -26
end=$((SECONDS + ${1:-330}))
for attempt in 1 2 3 4 5 6 7 8; do
  left=$((end - SECONDS)); [ $left -le 20 ] && break
  python3 benchmarks/measure_sweep.py --out $OUT/h100-sweep.jsonl --budget-s $left > /tmp/sweep.log 2>&1
  status=$?
  grep -v -i warn /tmp/sweep.log | tail -2
  [ $status -eq 0 ] && break
done
wc -l $OUT/*.jsonl
