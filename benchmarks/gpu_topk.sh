#!/bin/bash
# On the device machine (issue 13, about BUDGET_S seconds, 90 advised): bash benchmarks/gpu_topk.sh 90
# torch.topk's single-block select on randn rows and on rows like ALISA's accumulated scores, the
# same grid on the same machine one after the other (the law's data term and its within-wave
# rows term), then the multi-block shapes on score rows. Writes under $OUT/topk/:
#   TAG-topk-single-pair.jsonl   bench_topk.py --single-block, --data randn then --data scores
#   TAG-topk-scores.jsonl        bench_topk.py (the methods' long-row shapes), --data scores
#   TAG-scores-kernels.jsonl     bench_scores.py: H2O's and ALISA's score kernels alone, by bytes
# and prints each law's fit last.
budget=${1:-90}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh topk
quiet() { grep -v -i warn | tail -${TAIL:-2}; }
for data in randn scores; do
  echo "== single-block, $data ($(left) s left)"
  timeout $(( $(left) * 2 / 5 )) python3 benchmarks/bench_topk.py --single-block --data $data \
    --out $dir/$tag-topk-single-pair.jsonl 2>&1 | quiet
done
echo "== score kernels ($(left) s left)"
[ -n "$SKIP_SCORES" ] || timeout 40 python3 benchmarks/bench_scores.py --out $dir/$tag-scores-kernels.jsonl 2>&1 | TAIL=27 quiet
echo "== multi-block shapes, scores ($(left) s left)"
timeout $(( $(left) - 5 )) python3 benchmarks/bench_topk.py --data scores --out $dir/$tag-topk-scores.jsonl 2>&1 | TAIL=6 quiet
echo "== fits ($tag)"
python3 benchmarks/bench_topk.py --fit $dir/$tag-topk-single-pair.jsonl
python3 benchmarks/bench_scores.py --fit $dir/$tag-scores-kernels.jsonl --hw $tag
