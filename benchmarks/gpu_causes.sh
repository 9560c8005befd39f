#!/bin/bash
# On the device machine (issue 13, about BUDGET_S seconds, 120 advised): bash benchmarks/gpu_causes.sh 120
# Causes of attention-only errors, each timed apart from the validation sweep:
#   TAG-floor-logits.jsonl  H2O's attention kernel that also writes its fp32 logits against plain
#                           decode at 10 shapes, ALISA's gathered one against the gathered kernel at 5
#                           (bench_floor.py --only-logits): the attention_logits curve
#   TAG-scores-sparq.jsonl  SparQ's approximate-score and softmax kernels at 9 shapes (bench_scores.py
#                           --methods sparq): the sparq_scores and sparq_softmax curves
#   TAG-topk-step.jsonl     ALISA's and ADORE's own top-k calls alone (their input, a copy, randn, summed
#                           softmax) and in the attention-only step (bench_topk.py --step-topk)
#   TAG-profile-adore.json  profile_steps.py kernel tables of ADORE at 16k x 1 and 4k x 32 (its batch-1
#                           attention runs 9-14% over kvsim's)
# under $OUT/causes/; prints the ratios and the attention_logits profile line last.
budget=${1:-120}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh causes
echo "== sparq score kernels"
timeout $(( $(left) / 3 )) python3 benchmarks/bench_scores.py --methods sparq --out $dir/$tag-scores-sparq.jsonl 2>&1 \
  | grep -v -i warn | tail -18
python3 benchmarks/bench_scores.py --fit $dir/$tag-scores-sparq.jsonl --hw $tag 2>&1 | cut -c1-200
echo "== top-k in the step"
timeout $(( $(left) / 2 )) python3 benchmarks/bench_topk.py --step-topk ${TOPK_STEPS:-alisa:16384x1,alisa:4096x8,adore:16384x1,adore:4096x32} \
  --out $dir/$tag-topk-step.jsonl 2>&1 | grep -v -i warn | tail -3
echo "== adore kernel tables"
timeout 40 python3 benchmarks/profile_steps.py --out $dir/$tag-profile-adore.json --methods adore \
  --configs 16384x1,4096x32 2>&1 | grep -v -i warn | tail -14
echo "== logits"
timeout $(( $(left) - 5 )) python3 benchmarks/bench_floor.py --only-logits --out $dir/$tag-floor-logits.jsonl 2>&1 \
  | grep -v -i warn | tail -3
python3 benchmarks/bench_floor.py --fit $dir/$tag-floor-logits.jsonl --hw $tag 2>&1 | tail -18 | cut -c1-300
