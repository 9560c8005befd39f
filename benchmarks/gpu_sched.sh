#!/bin/bash
# On the device machine (about 90-150 s): ALISA's three-phase schedule and the FlexGen-style policy
# executed on an emulated smaller GPU (a GPU memory budget: kvsim schedule --gpu-mem), against
# kvsim's plan for that budget (issue 14, "ALISA's schedule executed").
#   bash benchmarks/gpu_sched.sh 120
# Runs tests/gpu/test_schedule_gpu.py first ($OUT/sched/TAG-tests.log). Writes
# $OUT/sched/TAG-schedule.jsonl (TAG h100 or h200; one record per policy and budget), then
# prints kvsim validate's table: total generation time, median step per phase, peak GPU memory,
# PCIe bytes, and the measured ALISA/FlexGen speedup beside kvsim's.
# opt-6.7b cut to 4 layers, batch 32. Budgets per device (the profiles' workspace differs), so that
#   A  prompt 128, gen 512:  Phases I -> II; FlexGen runs (its plan keeps every weight on the GPU)
#   B  prompt 128, gen 512:  Phases II -> III from the first step (FlexGen not run: A has it)
#   C  prompt 64, gen 1024:  Phases I -> II -> III (FlexGen: ~22 s of PCIe-bound steps, not run)
# A CPU check of the script (a tiny OPT-shaped model YAML; 2.642 GiB: Phase II): DEVICE=cpu
#   MODEL=tiny.yaml LAYERS=2 EXTRA=--no-warmup CONFIGS="8 16 48 2.64206 alisa,flexgen;8 16 48 2.643 alisa,flexgen"
#   TAG=cpu bash benchmarks/gpu_sched.sh 600   (rows: batch prompt gen GiB policies, ';'-separated)
budget=${1:-120}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
DEVICE=${DEVICE:-cuda}; MODEL=${MODEL:-opt-6.7b}; LAYERS=${LAYERS:-4}
TAG=${TAG:-$(python3 -m kvsim.runtime.environment)}
HW=${HW:-$([ "$TAG" = h200 ] && echo h200 || echo h100)}
case "$TAG" in  # (B re-chosen 2026-12-07, session 4, once the recomputation was counted as the
                # executor runs it: min(selected, deleted) entries and their temporaries)
  h200) DEFAULT="32 128 512 5.6 alisa,flexgen;32 128 512 5.2 alisa;32 64 1024 5.8 alisa" ;;
  *)    DEFAULT="32 128 512 5.5 alisa,flexgen;32 128 512 5.1 alisa;32 64 1024 5.6 alisa" ;;
esac
CONFIGS=${CONFIGS:-$DEFAULT}
out=$OUT/sched/$TAG-schedule.jsonl
mkdir -p "$OUT/sched"
start=$(date +%s)
if [ "$DEVICE" = cuda ]; then  # the executor's CUDA paths against dense attention first (~15 s)
  echo "== tests/gpu/test_schedule_gpu.py"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_schedule_gpu.py > $OUT/sched/$TAG-tests.log 2>&1
  grep -E "passed|failed|error" $OUT/sched/$TAG-tests.log | tail -3
fi
IFS=';' read -ra rows <<< "$CONFIGS"
for row in "${rows[@]}"; do
  read -r batch prompt gen gib policies <<< "$row"
  left=$(( budget - ($(date +%s) - start) - 12 ))  # 12 s kept for kvsim validate
  if [ "$left" -lt 20 ]; then echo "time budget reached: skipped B=$batch P=$prompt G=$gen ${gib}GiB"; continue; fi
  echo "== B=$batch P=$prompt G=$gen budget ${gib}GiB ($policies)"
  timeout "$left" python3 benchmarks/measure_schedule.py --hw "$HW" --model "$MODEL" --layers "$LAYERS" \
    --batch "$batch" --prompt "$prompt" --gen "$gen" --gpu-mem "${gib}GiB" --policies "$policies" \
    --device "$DEVICE" --out "$out" ${EXTRA} 2>&1 | grep -v -i warn | tail -4
done
echo "== kvsim validate $out   ($(( $(date +%s) - start )) s so far)"
timeout 60 python3 -m kvsim validate "$out"
# FlexGen's executed steps profiled where they are host-bound (the first ~150 steps run 15-45%
# over kvsim's eager time, 2026-12-08): host API calls and kernels per step, first budget's plan
read -r _ prompt gen gib _ <<< "${rows[0]}"
left=$(( budget - ($(date +%s) - start) ))
if [ "$DEVICE" = cuda ] && [ "$left" -gt 45 ]; then
  echo "== FlexGen steps 20, 60, 400 profiled ($MODEL, ${gib}GiB)"
  timeout $(( left - 5 )) python3 benchmarks/profile_schedule.py --hw "$HW" --model "$MODEL" --layers "$LAYERS" \
    --prompt "$prompt" --gen "$gen" --gpu-mem "${gib}GiB" --policy flexgen --steps 20,60,400 \
    --out "$OUT/sched/$TAG-flexgen-profile.json" 2>&1 | grep -v -i warn | tail -12
fi
