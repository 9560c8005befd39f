# On the device machine: the measurement sweep (resuming past CUDA errors and earlier files),
# then Nsight Compute HBM-byte counts for a subset. Usage: bash benchmarks/gpu_measure.sh SWEEP_S NCU_S
. benchmarks/gpu_setup.sh
end=$((SECONDS + ${1:-330}))
for attempt in 1 2 3 4 5 6 7 8; do
  left=$((end - SECONDS)); [ $left -le 20 ] && break
  python3 benchmarks/measure_sweep.py --out $OUT/h100-sweep-new.jsonl --resume benchmarks/results/h100-sweep.jsonl \
    --budget-s $left > /tmp/sweep.log 2>&1
  status=$?
  grep -v -i warn /tmp/sweep.log | tail -3
  [ $status -eq 0 ] && break
done
timeout ${2:-180} python3 benchmarks/measure_sweep.py --ncu --out $OUT/h100-ncu.jsonl --models llama-3.1-8b \
  --seqs 65536 --batches 4 --layers 2 --budget-s $(( ${2:-180} - 30 )) 2>&1 | grep -v -i warn | tail -12
wc -l $OUT/*.jsonl
