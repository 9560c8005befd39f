# On the device machine, one call per phase, every file named after the device (h100, h200):
#   bash benchmarks/gpu_device.sh TAG micro SECONDS   memory and launch costs, the microbenchmarks
#                                                     behind the profile's measured fields, the
#                                                     kernel benchmark, then the main sweep
#   bash benchmarks/gpu_device.sh TAG sweep SECONDS   the main sweep (resumed), then the extended
#                                                     grid (a quarter into TAG-vault.jsonl)
#   bash benchmarks/gpu_device.sh TAG extended SECONDS  memory and launch costs, extended grid
# Results go to $OUT/TAG-*.jsonl; earlier results under benchmarks/results/ are resumed.
. benchmarks/gpu_setup.sh
tag=$1 phase=$2 end=$((SECONDS + ${3:-540}))
R=benchmarks/results
run() { local limit=$1; shift; timeout "$limit" "$@" 2>&1 | grep -v -i warn | tail -${TAIL:-12}; }
sweep() {  # resume past CUDA errors (one failed configuration ends its process)
  local grid=$1 file=$2; shift 2  # more arguments: extra files already measured, then options
  for attempt in 1 2 3 4 5 6; do
    left=$((end - SECONDS - ${RESERVE:-0})); [ $left -le 20 ] && return
    timeout $((left + 30)) python3 benchmarks/measure_sweep.py --grid "$grid" --out "$OUT/$file" \
      --resume $R/$file $RESUME "$@" --budget-s $left > /tmp/sweep.log 2>&1
    status=$?; grep -v -i warn /tmp/sweep.log | tail -3
    [ $status -eq 0 ] && return
  done
}
if [ "$phase" = micro ] || [ "$phase" = extended ]; then
  run 150 python3 benchmarks/bench_memory.py --out $OUT/$tag-memory.jsonl
  run 60 python3 benchmarks/bench_launch.py --out $OUT/$tag-launch.jsonl
fi
if [ "$phase" = micro ]; then
  run 80 python3 benchmarks/bench_topk.py --single-block --out $OUT/$tag-topk-single.jsonl
  run 50 python3 benchmarks/bench_topk.py --out $OUT/$tag-topk.jsonl
  run 80 python3 benchmarks/bench_gemm.py --out $OUT/$tag-gemm.jsonl
  run 50 python3 benchmarks/bench_reread.py --out $OUT/$tag-reread.jsonl
  TAIL=30 run 120 python3 benchmarks/bench_kernels.py --out $OUT/$tag-kernels.jsonl
  sweep main $tag-sweep.jsonl
fi
if [ "$phase" = sweep ]; then
  RESERVE=${EXT_S:-200} sweep main $tag-sweep.jsonl
  RESUME=$R/$tag-vault.jsonl sweep extended $tag-extended.jsonl --vault $OUT/$tag-vault.jsonl
fi
if [ "$phase" = extended ]; then
  RESUME=$R/$tag-vault.jsonl sweep extended $tag-extended.jsonl --vault $OUT/$tag-vault.jsonl
fi
wc -l $OUT/*.jsonl
