# On the device machine (issue 12; finishes within BUDGET_S, 200 advised): bash benchmarks/gpu_accuracy.sh BUDGET_S
# Writes under $OUT/accuracy/, each file named after the device (TAG = h100, h200):
#   TAG-memory-sweep.jsonl      every method at one configuration of each of 5 models (4-8 layers):
#                               the peak allocation of one decode step, in one process, with the stale
#                               cuBLAS workspaces of earlier configurations freed (kvsim validate's
#                               memory column); latency there is 2 eager steps, not a target row
#   TAG-streamingllm-fresh.jsonl StreamingLLM at the configurations whose replays ran 12-15% slow late
#                               in the long sweep process, each in a process of its own: these records
#                               replace the in-sweep ones (their "note" says why)
# and prints, last, kvsim's error against each file.
. benchmarks/gpu_setup.sh
budget=${1:-200}
tag=$(python3 -m kvsim.runtime.environment)
dir=$OUT/accuracy; mkdir -p $dir
run() { local limit=$1; shift; timeout "$limit" "$@" 2>&1 | grep -v -i warn | tail -${TAIL:-4}; }
mem=$((budget * 40 / 100)); each=$((budget * 55 / 500))  # the memory sweep; each fresh process

echo "== memory: every method, 5 models, one process ($mem s)"
run $mem python3 benchmarks/measure_sweep.py --grid memory --memory --out $dir/$tag-memory-sweep.jsonl \
  --budget-s $((mem - 15)) --note "issue 12: peak allocation re-measured with stale cuBLAS workspaces freed"

echo "== streamingllm: the slow in-sweep replays, each in a fresh process (5 x $each s)"
note="issue 12: replaces the in-sweep record, whose replay ran 12-15% slow late in the sweep process; measured in a process of its own"
for case in "llama-2-7b 65536 32" "llama-2-7b 131072 8" "llama-2-7b 131072 32" "llama-3.1-8b 131072 32" "llama-3.1-8b 131072 8"; do
  set -- $case
  TAIL=1 run $each python3 benchmarks/measure_sweep.py --fresh --methods streamingllm --models $1 \
    --seqs $2 --batches $3 --layers 8 --steps 10 --warmup 3 --out $dir/$tag-streamingllm-fresh.jsonl \
    --budget-s 30 --note "$note"
done

ls -l $dir
echo "== summary ($tag)"
[ -s $dir/$tag-memory-sweep.jsonl ] && python3 -m kvsim validate $dir/$tag-memory-sweep.jsonl --by model 2>&1 | tail -9
[ -s $dir/$tag-streamingllm-fresh.jsonl ] && python3 -m kvsim validate $dir/$tag-streamingllm-fresh.jsonl --by model 2>&1 | tail -5
