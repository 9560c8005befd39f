"""Host cost of the reference runtime's own launches, apart from the validation sweep: each
method's eager step and attention-only step on a configuration small enough that the host, not
the GPU, sets the pace (llama-3.1-8b cut to 4 layers, 4k context, batch 1), timed on the host
(perf_counter over a burst, a sync at the end), with what it issues counted by kind
(runtime/launches.py LaunchCounter: torch calls, cuBLAS calls, views/allocations, Triton launches
and their runtime arguments, syncs). On a CUDA GPU:

    python3 benchmarks/bench_launch_runtime.py --out $OUT/h100-launch-runtime.jsonl
    python3 benchmarks/bench_launch_runtime.py --fit benchmarks/results/h100-launch-runtime.jsonl

``probe_s``: the host clock beside each timing (runtime/launches.py host_probe).
benchmarks/bench_host.py uses these calls with bare calls of each kind for the profile's fit.

``--fit``: least squares of host time = Σ count × cost per kind over the records (relative errors),
printed as profile values (host.launch_s, host.triton_arg_s) with the fit's residuals. Unlike
bench_launch.py's bare launches, these costs include the Python around each call (the kernels'
wrappers, the methods' bookkeeping), which an eager step pays too.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.records import append_jsonl  # noqa: E402

KINDS = ("torch", "torch_gemm", "torch_host", "triton", "triton_args")
CALLS = 20  # calls per timed burst
REPEATS = 15
LAYERS = 4


def host_time(fn, repeats: int = REPEATS, calls: int = CALLS) -> tuple[float, float]:
    """(seconds per call, host-clock probe): bursts of ``calls`` calls ending in a sync, each after
    a probe (runtime/launches.py host_probe), the medians over ``repeats``."""
    import torch
    from kvsim.runtime.launches import host_probe
    times, probes = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        probes.append(host_probe("cuda"))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times), statistics.median(probes)


def measure(method: str, env: dict, repeats: int = REPEATS, calls: int = CALLS) -> list[dict]:
    from kvsim.runtime.engine import Engine
    from kvsim.runtime.launches import count_launches
    steps = 2 * (repeats * calls + 40)
    params = {"reselect_layer": 3} if method == "tidaldecode" else None  # a selection layer of 4
    engine = Engine("llama-3.1-8b", method, params, batch=1, max_seq=4096 + steps + 64, n_layers=LAYERS)
    engine.prefill_synthetic(4096)
    for _ in range(5):
        engine.attention_only_step(), engine.step()
    rows = []
    for what, fn in (("step", engine.step), ("attention", engine.attention_only_step)):
        counts = count_launches(fn)
        host_s, probe_s = host_time(fn, repeats, calls)
        rows.append({"kind": "runtime launch", "method": method, "call": what, "host_s": host_s, "probe_s": probe_s,
                     "counts": counts, "model": "llama-3.1-8b", "n_layers": LAYERS, "seq": 4096, "batch": 1, **env})
        print(f"{method:13} {what:9} {rows[-1]['host_s'] * 1e6:8.1f} us  {counts}")
    return rows


def fit(path: str) -> None:
    import numpy as np
    records = [json.loads(line) for line in open(path) if '"runtime launch"' in line]
    counts = np.array([[r["counts"].get(k, 0) for k in KINDS] for r in records], dtype=float)
    times = np.array([r["host_s"] for r in records])
    weights = 1.0 / times  # relative errors
    # non-negative: a launch never gives time back (plain least squares traded the Triton launch
    # against its arguments, which rise together, and went below zero)
    from scipy.optimize import nnls
    cost = nnls(counts * weights[:, None], times * weights)[0]
    for kind, value in zip(KINDS, cost):
        print(f"{kind:12} {value * 1e6:8.3f} us")
    err = counts @ cost / times - 1
    print(f"relative error: median {np.median(abs(err)):.1%}, worst {err[np.argmax(abs(err))]:+.1%} "
          f"over {len(records)} calls")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--fit")
    ap.add_argument("--methods", default="dense,streamingllm,h2o,adore,tidaldecode,sparq,quest,alisa,duoattention")
    args = ap.parse_args()
    if args.fit:
        return fit(args.fit)
    from bench_launch import environment
    env = environment()
    records = [row for method in args.methods.split(",") for row in measure(method, env)]
    append_jsonl(args.out, records)


if __name__ == "__main__":
    main()
