# On the device machine, one call: the split attention kernels (issue 15) checked and timed.
#   bash benchmarks/gpu_split.sh [BUDGET_S=120]      (BASE=<commit> to pick the baseline kernels)
# Writes under $OUT/split/, TAG = h100 or h200:
#   TAG-tests.log            GPU kernel and backend tests + which kernel each launcher reaches
#   TAG-kernels.jsonl        bench_kernels.py at B = 1, 8 x 128k with this tree's kernels
#   TAG-kernels-base.jsonl   the same with the kernels/ folder of BASE (the unsplit kernel), when
#                            the checkout has git history; same process order, same GPU
#   TAG-spotcheck.jsonl      measure_sweep.py, llama-3.1-8b 16k x 8, as many as the budget lets:
#                            dense, streamingllm (rope on load), adore (position mask), quest
#                            (pages), duoattention (window), h2o (logits), tidaldecode (gather)
#   TAG-spotcheck-int8.jsonl ALISA kv_bits=8 (int8 + gather + logits + pages) 16k x 8
#   TAG-launch-runtime.jsonl bench_launch_runtime.py: eager host time and Triton arguments per
#                            call (the split kernels take fewer arguments: 32/39/23 against 50)
# and prints last, per kernel and per method, the new time against the baseline and the
# committed benchmarks/results files.
[ -n "$OUT" ] || { echo "gpu_split.sh: set OUT to the output folder"; exit 2; }
case "$PYTHONPATH" in */tmp/site*) ;; *) . benchmarks/gpu_setup.sh ;; esac
budget=${1:-120}
base=${BASE:-a15bc8a}
dir=$OUT/split
mkdir -p "$dir"
tag=$(python3 -m kvsim.runtime.environment)
part() { python3 -c "print(max(10, int($budget * $1)))"; }
run() { local limit=$1; shift; timeout "$limit" "$@" 2>&1 | grep -v -i warn | tail -${TAIL:-4}; }

echo "== tests ($(part 0.25) s)"
timeout "$(part 0.25)" python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_kernels_gpu.py \
  tests/gpu/test_backends_gpu.py tests/test_kernels_attention_dispatch.py > "$dir/$tag-tests.log" 2>&1
grep -E "passed|failed|error" "$dir/$tag-tests.log" | tail -3

echo "== kernels: this tree, then the base's kernels/ ($(part 0.2) s each)"
bench="benchmarks/bench_kernels.py --batches 1,8 --seqs 131072"
run "$(part 0.2)" python3 $bench --out "$dir/$tag-kernels.jsonl"
if git cat-file -e "$base^{commit}" 2>/dev/null; then
  rm -rf /tmp/split-base && mkdir -p /tmp/split-base
  tar --exclude=.git --exclude=.whl -cf - . | tar -xf - -C /tmp/split-base
  rm -rf /tmp/split-base/kernels && git archive "$base" kernels | tar -xf - -C /tmp/split-base
  (cd /tmp/split-base && PYTHONPATH=/tmp/site:/tmp/split-base run "$(part 0.2)" python3 $bench \
    --out "$dir/$tag-kernels-base.jsonl")
else
  echo "no git history here: comparing with the committed kernel benchmark only"
fi

echo "== spot check ($(part 0.27) s)"
spot="benchmarks/measure_sweep.py --models llama-3.1-8b --seqs 16384 --batches 8 --layers 8"
TAIL=2 run "$(part 0.2)" python3 $spot --methods dense,streamingllm,adore,quest,duoattention,h2o,tidaldecode \
  --budget-s "$(part 0.15)" --out "$dir/$tag-spotcheck.jsonl"
TAIL=2 run "$(part 0.07)" python3 $spot --methods alisa --param kv_bits=8 --steps 8 --warmup 2 \
  --budget-s "$(part 0.05)" --out "$dir/$tag-spotcheck-int8.jsonl"

echo "== eager launches ($(part 0.08) s)"
run "$(part 0.08)" python3 benchmarks/bench_launch_runtime.py --methods dense,streamingllm,adore,alisa \
  --out "$dir/$tag-launch-runtime.jsonl"

echo "== summary ($tag): new ms vs the same run's base and the committed results"
python3 - "$dir" "$tag" <<'EOF'
import json, os, sys
from kvsim.records import read_jsonl
d, tag = sys.argv[1:]
def rows(path):
    return read_jsonl(path) if os.path.exists(path) else []
def pct(a, b):
    return f"{100 * (a / b - 1):+6.1f}%" if a and b else "    -  "
res = "benchmarks/results"
key = lambda r: (r["kernel"], r["batch"], r["seq"])
base = {key(r): r["ours_ms"] for r in rows(f"{d}/{tag}-kernels-base.jsonl")}
old = {key(r): r["ours_ms"] for r in rows(f"{res}/{tag}-kernels.jsonl")}
print(f"{'kernel':<28}{'B':>3}{'S':>7}{'new ms':>9}{'base ms':>9}{'vs base':>9}{'committed':>10}{'vs it':>9}")
for r in rows(f"{d}/{tag}-kernels.jsonl"):
    k = key(r)
    print(f"{k[0]:<28}{k[1]:>3}{k[2]:>7}{r['ours_ms']:>9.4f}{base.get(k, 0):>9.4f}{pct(r['ours_ms'], base.get(k)):>9}"
          f"{old.get(k, 0):>10.4f}{pct(r['ours_ms'], old.get(k)):>9}")
spot = lambda r: (r["method"], r["model"], r["seq"], r["batch"], r["n_layers"], json.dumps(r.get("params", {}), sort_keys=True))
ref = {}
for f in (f"{tag}-sweep.jsonl", f"{tag}-spotcheck.jsonl", f"{tag}-alisa-int8.jsonl"):
    for r in rows(f"{res}/{f}"):
        if r.get("latency_s"):
            ref.setdefault(spot(r), {})[f] = r["latency_s"]
print(f"{'method':<14}{'params':<18}{'new ms':>9}  committed ms (file): vs it")
for r in rows(f"{d}/{tag}-spotcheck.jsonl") + rows(f"{d}/{tag}-spotcheck-int8.jsonl"):
    if not r.get("latency_s"):
        continue
    olds = ref.get(spot(r), {})
    text = "  ".join(f"{v * 1e3:.3f} ({f}): {pct(r['latency_s'], v).strip()}" for f, v in olds.items())
    print(f"{r['method']:<14}{json.dumps(r.get('params', {}))[:17]:<18}{r['latency_s'] * 1e3:>9.3f}  {text or '-'}")
launch = {(r["method"], r["call"]): r for r in rows(f"{res}/{tag}-launch-runtime.jsonl")}
print(f"{'eager call':<26}{'host ms':>9}{'committed':>10}{'vs it':>9}{'triton args':>12}{'committed':>10}")
for r in rows(f"{d}/{tag}-launch-runtime.jsonl"):
    o = launch.get((r["method"], r["call"]), {})
    print(f"{r['method'] + ' ' + r['call']:<26}{r['host_s'] * 1e3:>9.3f}{o.get('host_s', 0) * 1e3:>10.3f}"
          f"{pct(r['host_s'], o.get('host_s')):>9}{r['counts']['triton_args']:>12}"
          f"{o.get('counts', {}).get('triton_args', 0):>10}")
EOF
