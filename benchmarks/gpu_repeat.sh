#!/bin/bash
# On the device machine (issue 12, about BUDGET_S seconds): bash benchmarks/gpu_repeat.sh 200
# The main grid's llama-3.1-8b configurations at 4k-64k of the methods other than H2O and ALISA
# (those were repeated in h100-sweep-scores-2.jsonl), measured again on whichever machine of the
# kind this call got: how far one machine of a device is from another, per method (a repeat:
# never merged into TAG-sweep.jsonl). Writes $OUT/repeat/TAG-sweep-repeat-machine.jsonl.
budget=${1:-200}
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
. benchmarks/gpu_clock.sh repeat
timeout $(( $(left) - 5 )) python3 benchmarks/measure_sweep.py --grid main --models llama-3.1-8b \
  --seqs 4096,16384,65536 --methods dense,sparq,quest,tidaldecode,streamingllm,duoattention,adore \
  --out $dir/$tag-sweep-repeat-machine.jsonl --budget-s $(( $(left) - 20 )) \
  --note "issue 12: main-grid configurations again on another machine of the device (machine-to-machine spread)" \
  2>&1 | grep -v -i warn | tail -3
echo "== kvsim validate ($tag, $(( SECONDS - start )) s)"
python3 -m kvsim validate $dir/$tag-sweep-repeat-machine.jsonl 2>&1 | tail -10
