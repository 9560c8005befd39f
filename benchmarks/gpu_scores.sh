#!/bin/bash
# On the device machine (issues 13 and 19, about BUDGET_S seconds, 130 advised):
#   bash benchmarks/gpu_scores.sh 130
# H2O's and ALISA's score kernels after the change of 2026-12-07: the weight accumulation loads
# a set's heads as one tile (it was a loop of HS dependent loads: ALISA's 32 heads took 10 us a
# layer where kvsim charges 3-5), and H2O's eviction scans its slots in 4096-slot steps (was 1024).
# Writes under $OUT/scores/ (TAG = h100, h200):
#   TAG-tests.log            the two kernels against their torch references on the GPU
#   TAG-profile-scores.json  profile_steps.py kernel tables, H2O and ALISA, 4k x 8 and 16k x 1
#   TAG-sweep-scores.jsonl   the main sweep grid's H2O and ALISA rows, re-measured on the new
#                            kernels (they replace those rows of TAG-sweep.jsonl)
# and prints kvsim validate on them last.
budget=${1:-130}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh scores

echo "== kernel tests ($tag)"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_scores.py tests/test_kernels_evict.py \
  -k "accumulate or evict" > $dir/$tag-tests.log 2>&1
grep -E "passed|failed|error" $dir/$tag-tests.log | tail -2
echo "== kernel tables"
timeout 35 python3 benchmarks/profile_steps.py --out $dir/$tag-profile-scores.json --methods h2o,alisa \
  --configs 4096x8,16384x1 2>&1 | grep -v -i warn | grep -E "accumulate|evict|attn_kernel" | tail -12
echo "== main grid, H2O and ALISA ($(left) s left)"
timeout $(( $(left) - 10 )) python3 benchmarks/measure_sweep.py --grid main --methods h2o,alisa \
  --out $dir/$tag-sweep-scores.jsonl --budget-s $(( $(left) - 25 )) \
  --note "issues 13/19: H2O and ALISA re-measured on the tiled score accumulation and the 4096-slot eviction scan" \
  2>&1 | grep -v -i warn | tail -3
echo "== kvsim validate ($tag, $(( SECONDS - start )) s)"
python3 -m kvsim validate $dir/$tag-sweep-scores.jsonl 2>&1 | tail -5
