# On the device machine, after `. benchmarks/gpu_setup.sh`:  bash benchmarks/gpu_offload.sh BUDGET_S
# (about 150 s per device at BUDGET_S=180; a smaller budget measures fewer configurations).
# OFFLOAD=0.9 SEQS=16384,65536 PROFILE=0 narrow it (defaults: 0.25,0.5,0.9; 16k,64k; profile on);
# RESUME=FILE.jsonl continues a cut-off run (its records are kept; failed ones skipped);
# (a configuration that fails under graph replay: benchmarks/gpu_sanitize.sh re-runs it captured,
# with blocking launches and under compute-sanitizer)
# Offloaded decode steps of dense, SparQ, Quest, ALISA and TidalDecode at offload 0.25, 0.5,
# 0.9, 16k and 64k x batch 4, llama-3.1-8b cut to 4 layers,
# timed by CUDA-graph replay where the step captures (else eager, the reason in `timer`) and
# one call at a time between device syncs. Writes under $OUT/offload/ (TAG = h100, h200):
#   TAG-graph-tests.log        tests/gpu/test_offload_graph_gpu.py: a replayed offloaded step
#                              fetches the host rows again (host rows zeroed after the capture)
#   TAG-pcie-gather.jsonl      bench_pcie.py --skip-copy: zero-copy gathers by row size (checks
#                              the H100 256-B point of the profile)
#   TAG-offload.jsonl          the records (graph replay, eager, synced)
#   TAG-offload-synced.jsonl   the same records with the synced times as latencies
#   TAG-offload-profile.json   profile_steps.py: kernels of one offloaded step (64k x 4, F = 0.5)
# and prints last: kvsim validate per method x F (median / p90), graphs and synced, and each
# record's timer and implied link rate (h2d bytes / step: a copy left out of a graph shows as a
# rate above the link's). Nothing is fitted on these records: all of them are held out (the link
# curves come from the microbenchmark bench_pcie.py; the graphs are validated on the shipped
# profile and on one with the gather curve just re-measured).
budget=${1:-180}
. benchmarks/gpu_clock.sh offload

echo "== graph capture of offloaded steps ($tag)"
timeout 40 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_offload_graph_gpu.py > $dir/$tag-graph-tests.log 2>&1
grep -E "passed|failed|error" $dir/$tag-graph-tests.log | tail -2

echo "== zero-copy gathers"
timeout 15 python3 benchmarks/bench_pcie.py --skip-copy --out $dir/$tag-pcie-gather.jsonl --hw $tag 2>&1 | tail -3

echo "== offloaded steps"
[ -n "$RESUME" ] && cp "$RESUME" $dir/$tag-offload.jsonl
args="--out $dir/$tag-offload.jsonl --synced-out $dir/$tag-offload-synced.jsonl --steps 6 --warmup 2 --offload ${OFFLOAD:-0.25,0.5,0.9} --seqs ${SEQS:-16384,65536}"
# A configuration that fails (a CUDA error poisons the process; it may also abort on exit) is
# written as a failed record: the rest resume in a fresh process past it, with graphs twice,
# then without.
for graphs in "" "" --no-graphs; do
  [ $(left) -gt 75 ] || break
  timeout $(( $(left) - 45 )) python3 benchmarks/measure_offload_synced.py $args --skip-done $graphs \
    --budget-s $(( $(left) - 65 )) 2>&1 | grep -v -i warn | grep -v "^frame #"
  [ ${PIPESTATUS[0]} -eq 0 ] && break
  echo "-- resuming past the failed configuration ${graphs:+without graphs}"
done

echo "== where an offloaded step's GPU time goes (64k x 4, F = 0.5, torch.profiler)"
[ "${PROFILE:-1}" = 1 ] && timeout 25 python3 benchmarks/profile_steps.py --out $dir/$tag-offload-profile.json --methods quest,sparq,alisa,dense \
  --seq 65536 --batch 4 --layers 4 --offload 0.5 2>&1 | grep -v -i warn

echo "== summary ($tag, $(( SECONDS - start )) s)"
python3 - $dir/$tag-offload.jsonl <<'PY'
import sys
from kvsim.records import read_jsonl
for r in read_jsonl(sys.argv[1]):
    if r.get("source") != "measured" or not r.get("fits"):
        print(r.get("method"), r.get("offload"), r.get("seq"), "not measured:", r.get("error", "")[:100]); continue
    gbs = r["pcie"]["h2d"] / r["latency_s"] / 1e9
    print(f"{r['method']:12s} F={r['offload']:<4} S={r['seq']:6d} step {r['latency_s']*1e3:8.3f} ms "
          f"synced {r['synced']['latency_s']*1e3:8.3f} ms  h2d {gbs:5.1f} GB/s  {r['timer'][:60]}")
PY
echo "-- kvsim validate, graph replay (predicted on the graph engine)"
python3 -m kvsim validate $dir/$tag-offload.jsonl 2>&1 | grep -v '^skipped'
echo "-- kvsim validate, graph replay, on the link curves with the gathers just measured (copies: committed)"
grep '"kind": "copy"' benchmarks/results/$tag-pcie.jsonl > /tmp/$tag-pcie-merged.jsonl
cat $dir/$tag-pcie-gather.jsonl >> /tmp/$tag-pcie-merged.jsonl 2>/dev/null
python3 benchmarks/bench_pcie.py --fit /tmp/$tag-pcie-merged.jsonl --hw $tag --yaml --profile-out /tmp/$tag-link.yaml 2>&1 | grep gather | cut -c1-300
[ -s /tmp/$tag-link.yaml ] && python3 -m kvsim validate --hw /tmp/$tag-link.yaml $dir/$tag-offload.jsonl 2>&1 | grep -v '^skipped'
echo "-- kvsim validate, synced eager (predicted on the eager engine)"
python3 -m kvsim validate $dir/$tag-offload-synced.jsonl 2>&1 | grep -v '^skipped'
