# On the device machine, after `. benchmarks/gpu_setup.sh`: the eager engine's host costs and a
# held-out eager set (issue 13). About BUDGET seconds (default 90):
#   bash benchmarks/gpu_eager.sh 90
# Writes under $OUT/eager/ (TAG = h100 or h200, from the device name):
#   TAG-host.jsonl          benchmarks/bench_host.py: bare calls of each kind (torch launch, cuBLAS,
#                           view/allocation, .item(), Triton at 2..48 arguments) and the runtime's own
#                           step/attention calls, each with the host-clock probe beside it
#   TAG-eager-vault2.jsonl  benchmarks/measure_eager_vault.py: every method off the sweep grid
#                           (12k/40k x batch 3/5, llama-3.1-8b/llama-2-7b at 4/6 layers), 20 eager
#                           steps each with eager.host_probe_s, no torch.profiler; not opened here
# and prints, last, the host fit (kvsim/host_fit.py) and how many vault records were written.
budget=${1:-90}
mkdir -p $OUT/eager
tag=$(python3 -m kvsim.runtime.environment)
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) - ${1:-0} )); }

echo "== host costs ($tag)"
timeout $(( budget * 45 / 100 )) python3 benchmarks/bench_host.py --out $OUT/eager/$tag-host.jsonl 2>&1 \
  | grep -v -i warn | tail -16

echo "== eager vault"
vault=$(left 12)
if [ "$vault" -gt 10 ]; then
  timeout $vault python3 benchmarks/measure_eager_vault.py --out $OUT/eager/$tag-eager-vault2.jsonl \
    --budget-s $(( vault - 8 )) 2>&1 | grep -v -i warn | tail -3
fi

echo "== summary ($tag, $(( $(date +%s) - start )) s)"
python3 benchmarks/bench_host.py --fit $OUT/eager/$tag-host.jsonl 2>&1 | tail -10
echo "vault records: $(wc -l < $OUT/eager/$tag-eager-vault2.jsonl 2>/dev/null || echo 0) (not opened)"
