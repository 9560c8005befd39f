"""H2O's, ALISA's and SparQ's score kernels alone, apart from the validation sweep: the weight
accumulation (kernels/scores.py ``accumulate_weights``: H2O per KV head's G query heads, ALISA
indexed over all heads) and H2O's eviction scan (kvsim/methods/h2o/kernels.py ``evict_insert``),
each at the shapes its method runs at 4k-64k x batch 1-32 (llama-3.1-8b's heads), by CUDA-graph
replay with its inputs left in the L2 (in a step the attention kernel wrote the logits just
before). SparQ's approximate scores and their softmax (kvsim/methods/sparq/kernels.py
``sparq_scores_and_group``: two kernels, one call) are timed per kernel by torch.profiler over
calls rotating through copies of the d-major K (cold, as in a step), so the softmax reads the
logits the score kernel just wrote, as in a step; each kernel is charged its profiled time plus
half of what the call's CUDA-graph replay adds to the two (the gap a kernel leaves in a graph,
which the other families' replay times include). Each record carries the bytes kvsim's cost
model charges the op at that shape (one layer), so ``--fit`` gives the kernel family's curve,
bytes against seconds. On a CUDA GPU (``--methods sparq``: only SparQ's kernels):
    python3 benchmarks/bench_scores.py --out $OUT/h100-scores-kernels.jsonl
Anywhere: python3 benchmarks/bench_scores.py --fit FILE --hw h100
"""
import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.bench_kernels import environment  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402

MODEL = "llama-3.1-8b"
SEQS, BATCHES = (4096, 16384, 65536), (1, 8, 32)


def charged_bytes(method: str, op_name: str, seq: int, batch: int) -> float:
    """kvsim's HBM bytes of ``op_name`` in one layer of ``method`` at (seq, batch)."""
    from kvsim.methods import get_method
    from kvsim.models import first_layers
    from kvsim.profiles import load_profile
    from kvsim.workload import Workload
    model, wl = first_layers(MODEL, 1), Workload(seq=seq, batch=batch)
    cost = get_method(method, {}).cost(model, load_profile("h100"), wl)  # bytes: no profile field
    return float(sum(float(op.hbm_bytes) for op in cost.ops if op.name == op_name))


def cases():
    """(method, op name, seq, batch) of each timed kernel."""
    from kvsim.hardware import SCORE_FAMILIES
    for method, op in SCORE_FAMILIES:
        for seq in SEQS:
            for batch in BATCHES:
                yield method, op, seq, batch


def call_of(method: str, op: str, seq: int, batch: int, dev: str = "cuda"):
    """A no-argument call of the runtime kernel at the method's shape."""
    import torch
    from kvsim.methods import get_method
    from kvsim.models import first_layers
    from kvsim.runtime import ops
    model, spec = first_layers(MODEL, 1), get_method(method, {})
    H, Hkv, d = model.n_heads, model.n_kv_heads, model.head_dim
    if method == "sparq":
        return sparq_calls(spec, model, seq, batch, dev)
    if method == "alisa":
        rows = int(spec.selected_tokens(seq + 1))  # local + global, at n = seq + 1 as the runtime reads
        logits, lse = torch.randn(batch, H, rows, device=dev), torch.randn(batch, H, device=dev) + 10
        acc = torch.zeros(batch, seq + 1, device=dev)
        idx = torch.stack([torch.randperm(seq + 1, device=dev)[:rows] for _ in range(batch)]).int()
        counts = torch.full((batch,), rows, dtype=torch.int32, device=dev)
        return lambda: ops.accumulate_weights(logits, lse, acc, counts, H, indices=idx)
    cap = int(spec.cached_tokens(seq))
    if op.endswith("score_update"):
        logits, lse = torch.randn(batch, H, cap + 1, device=dev), torch.randn(batch, H, device=dev) + 10
        acc = torch.zeros(batch, Hkv, cap + 1, device=dev)
        counts = torch.full((batch,), cap + 1, dtype=torch.int32, device=dev)
        return lambda: ops.accumulate_weights(logits[..., :cap], lse, acc, counts, H // Hkv)
    acc = torch.rand(batch, Hkv, cap, device=dev)
    slot_pos = torch.arange(cap, device=dev).expand(batch, Hkv, cap).contiguous()
    kk, vv = (torch.randn(batch, Hkv, cap, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
    kn, vn = (torch.randn(batch, Hkv, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
    return lambda: ops.evict_insert(acc, slot_pos, kk, vv, kn, vn, seq, 64)


SPARQ_KERNELS = {"layers/attn/sparq_score_approx": "_sparq_logits_kernel",
                 "layers/attn/sparq_softmax": "_sparq_norm_kernel"}


def sparq_calls(spec, model, seq: int, batch: int, dev: str) -> list:
    """SparQ's scores call at (seq, batch), once per copy of its d-major K (copies enough that one
    pass over them is 4x the L2: each call's K cold)."""
    import torch
    from kvsim.runtime import ops
    from kvsim.runtime.cache import num_splits
    H, Hkv, d, r = model.n_heads, model.n_kv_heads, model.head_dim, spec.rank(model)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    copies = max(1, min(8, -(-4 * l2 // (batch * Hkv * d * seq * 2))))
    q = torch.randn(batch, H, d, device=dev, dtype=torch.bfloat16)
    i1, tau = ops.sparq_components(q, Hkv, r)
    lens = torch.full((batch,), seq, dtype=torch.int32, device=dev)
    kts = [torch.randn(batch, Hkv, d, seq, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
    splits = num_splits(batch, Hkv, seq)
    return [lambda kt=kt: ops.sparq_scores_and_group(q, kt, i1, lens, tau, local=64, num_splits=splits)
            for kt in kts]


def profiled_us(calls: list, kernel: str, rounds: int = 20) -> float:
    """Mean device time of ``kernel`` per call over ``rounds`` passes over ``calls``."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    for call in calls:
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(rounds):
            for call in calls:
                call()
        torch.cuda.synchronize()
    hits = [e for e in prof.key_averages() if kernel in e.key]
    return sum(e.self_device_time_total for e in hits) / sum(e.count for e in hits)


def timed_us(method: str, op: str, seq: int, batch: int) -> dict:
    """{"us": the op's time in a CUDA-graph replay} (SparQ: also the call's replay time and each
    kernel's profiled time; the op's share is its kernel's time plus half what the replay adds
    to the two kernels, the gap each kernel leaves in a graph)."""
    from triton.testing import do_bench_cudagraph
    if method == "sparq":
        kernels, pair = sparq_times(seq, batch)
        gap = max(pair - sum(kernels.values()), 0.0) / len(kernels)
        return {"us": kernels[op] + gap, "kernel_us": kernels[op], "call_us": pair}
    return {"us": do_bench_cudagraph(call_of(method, op, seq, batch), rep=30, return_mode="median") * 1e3}


@functools.lru_cache(maxsize=None)  # the two ops of one shape come from one timing
def sparq_times(seq: int, batch: int) -> tuple[dict, float]:
    """SparQ's call at (seq, batch) timed once for both its ops: each kernel's profiled time
    (op name -> us) and the call's CUDA-graph replay time (us)."""
    from triton.testing import do_bench_cudagraph
    calls = call_of("sparq", "", seq, batch)
    kernels = {name: profiled_us(calls, kernel) for name, kernel in SPARQ_KERNELS.items()}
    return kernels, do_bench_cudagraph(lambda: [c() for c in calls], rep=30, return_mode="median") * 1e3 / len(calls)


def measure(out: str, methods: set) -> None:
    env = environment()
    for method, op, seq, batch in cases():
        if method not in methods:
            continue
        times = timed_us(method, op, seq, batch)
        us, nbytes = times["us"], charged_bytes(method, op, seq, batch)
        row = {"method": method, "op": op, "seq": seq, "batch": batch, **times, "bytes": nbytes}
        append_jsonl(out, [{**env, **row}])
        print(f"{method:6s} {op:26s} {seq:6d} x {batch:2d}  {us:7.2f} us  {nbytes / 1e6:8.3f} MB "
              f"{nbytes / us / 1e6:7.3f} TB/s", flush=True)


def fit(path: str, hw_name: str) -> None:
    """Each family's profile line: kvsim's bytes over the measured time (kvsim.fits.kernel_curve_fit,
    inputs L2-resident where they fit, as in a step)."""
    from kvsim.fits import kernel_curve_fit, rounded_curve
    from kvsim.hardware import SCORE_FAMILIES
    from kvsim.profiles import load_profile
    hw = load_profile(hw_name)
    records = [json.loads(line) for line in open(path) if line.strip()]
    for (method, op), family in SCORE_FAMILIES.items():
        rs = [r for r in records if r["method"] == method and r["op"] == op]
        if not rs:
            continue
        how = ("torch.profiler's kernel time plus half the gap the two kernels' CUDA-graph replay adds, over "
               "calls rotating cold copies of the d-major K, the softmax reading the logits the score kernel "
               "just wrote" if method == "sparq" else
               "CUDA-graph replays with its inputs left in the L2")
        points = kernel_curve_fit([r["bytes"] for r in rs], [r["us"] * 1e-6 for r in rs],
                                  hw.memory.bandwidth_Bps.value, l2_resident=True)
        print(f"    {family}: {{points: {rounded_curve(points)}, source: "
              f"\"measured {rs[0]['date'][:10]}, {rs[0]['device']}: {path} (python3 benchmarks/bench_scores.py "
              f"--fit {path} --hw {hw.name}): {method}'s {op.split('/')[-1]} kernel alone at {len(rs)} shapes "
              f"(llama-3.1-8b, 4k-64k x batch 1-32), {how}, as in a step; kvsim's bytes over its time\"}}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--fit")
    ap.add_argument("--hw", default="h100")
    ap.add_argument("--methods", default="h2o,alisa,sparq", help="with --out: the methods whose kernels to time")
    args = ap.parse_args()
    if args.fit:
        fit(args.fit, args.hw)
    elif args.out:
        measure(args.out, set(args.methods.split(",")))
    else:
        ap.error("give --out (measure, on a GPU) or --fit FILE")


if __name__ == "__main__":
    main()
