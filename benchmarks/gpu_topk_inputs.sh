#!/bin/bash
# On the device machine (issue 13, about BUDGET_S seconds, 300 advised): bash benchmarks/gpu_topk_inputs.sh 300
# torch.topk on the inputs the methods' runtimes make, by input kind, with each row's radix passes:
#   TAG-topk-inputs.jsonl    bench_topk.py --input-grid alisa,adore: ALISA's accumulated weights and
#                            ADORE's released scores at 6 contexts x 5 batches, each next to randn rows
#                            and as the step calls it (a view), with the radix passes of each
#   TAG-profile-h2o.json     profile_steps.py kernel tables of H2O at 4k x 1 and 4k x 32 (its small
#                            shapes run 6-13% over kvsim's attention)
#   TAG-topk-check.jsonl     ALISA and ADORE at contexts and batches no sweep has (6k/12k/24k x
#                            2/4/16, llama-3.1-8b, 8 layers): held out for a law by input kind, not printed
# under $OUT/topk_inputs/; prints the single-block law fitted to each input kind last.
budget=${1:-300}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh topk_inputs
echo "== own inputs ($(left) s left)"
timeout $(( $(left) / 2 )) python3 benchmarks/bench_topk.py --input-grid alisa,adore \
  --out $dir/$tag-topk-inputs.jsonl 2>&1 | grep -v -i warn | tail -70
echo "== h2o kernel tables ($(left) s left)"
timeout 40 python3 benchmarks/profile_steps.py --out $dir/$tag-profile-h2o.json --methods h2o \
  --configs 4096x1,4096x32 2>&1 | grep -v -i warn | tail -30
echo "== held-out check ($(left) s left; not printed)"
python3 benchmarks/measure_sweep.py --methods alisa,adore --models llama-3.1-8b --seqs 6144,12288,24576 \
  --batches 2,4,16 --out $dir/$tag-topk-check.jsonl --budget-s $(( $(left) - 20 )) > $dir/check.log 2>&1
echo "   $(wc -l < $dir/$tag-topk-check.jsonl) configurations"
echo "== fit"
python3 benchmarks/bench_topk.py --fit $dir/$tag-topk-inputs.jsonl --hw $tag 2>&1 | tail -4
