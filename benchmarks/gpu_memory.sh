# On the device machine (issue 12): capacity, context reserve and the largest batch the runtime
# really runs for the models whose synthetic weights used to leave allocator holes (llama-2-13b,
# llama-2-7b), within BUDGET_S seconds: bash benchmarks/gpu_memory.sh 80
# Writes $OUT/memory/TAG-memory.jsonl (bench_memory.py's records) and prints kvsim's max batch beside it.
[ -n "$PYTHONPATH" ] || . benchmarks/gpu_setup.sh
budget=${1:-80}
tag=$(python3 -m kvsim.runtime.environment)
mkdir -p $OUT/memory
start=$(date +%s)
for model in llama-2-13b llama-2-7b; do
  left=$(( budget - ($(date +%s) - start) - 10 ))
  [ "$left" -gt 15 ] || { echo "time budget reached: skipped $model"; continue; }
  timeout $left python3 benchmarks/bench_memory.py --model $model --out $OUT/memory/$tag-memory.jsonl 2>&1 \
    | grep -v -i warn | tail -3
done
timeout 10 python3 -m kvsim validate $OUT/memory/$tag-memory.jsonl 2>&1 | tail -8
