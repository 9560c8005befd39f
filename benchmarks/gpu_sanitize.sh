#!/bin/bash
# On the device machine (issue 14): one offloaded configuration that fails under CUDA-graph
# replay, run again (1) captured with blocking launches (a race between the copy and compute
# streams disappears there), (2) captured under compute-sanitizer's memcheck (the kernel and
# address of the first bad access), within about BUDGET_S seconds:
#   CASE=quest:0.9:16384 STEPS=6 WARMUP=2 bash benchmarks/gpu_sanitize.sh 200
# (STEPS and WARMUP set the context the step is captured at: measure.py's prefill leaves room
# for WARMUP + STEPS/2 steps; quest F=0.9 S=16384 failed with 5-7 steps and ran with 8, until
# the length cache kept the lengths a captured graph reads)
# Writes $OUT/sanitize/TAG-{blocking,memcheck}.log and prints their last lines.
budget=${1:-200}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh sanitize
IFS=: read -r m f s <<< "${CASE:-quest:0.9:16384}"
# the configuration, captured and replayed (measure_offload_synced.py's graph timing)
case_cmd="python3 benchmarks/measure_offload_synced.py --out /tmp/case.jsonl --methods $m --offload $f --seqs $s
  --steps ${STEPS:-1} --warmup ${WARMUP:-1} --budget-s 30"
echo "== $m F=$f S=$s, captured, CUDA_LAUNCH_BLOCKING=1"
CUDA_LAUNCH_BLOCKING=1 timeout 90 $case_cmd > $dir/$tag-blocking.log 2>&1
grep -v -i warn $dir/$tag-blocking.log | grep -v "^frame #" | grep -E "step|failed|Error|error" | head -6
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
echo "== $m F=$f S=$s, captured, under ${sanitizer:-no compute-sanitizer found} ($(left) s left)"
if [ -n "$sanitizer" ]; then
  timeout $(( $(left) - 5 )) $sanitizer --tool memcheck --print-limit 4 --show-backtrace device $case_cmd \
    > $dir/$tag-memcheck.log 2>&1
  echo "   exit $?"
  grep -E "Invalid|ERROR SUMMARY|at 0x|by thread|Address|kernel|step " $dir/$tag-memcheck.log | grep -v -i warn | head -24
fi
