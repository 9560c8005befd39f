"""The eager engine's host costs, each kind by a burst of its own (kvsim/host_fit.py), apart from
the validation sweep. On a CUDA GPU:

    python3 benchmarks/bench_host.py --out $OUT/eager/h100-host.jsonl
    python3 benchmarks/bench_host.py --fit benchmarks/results/h100-host.jsonl --write hw_profiles/h100-sxm.yaml

Records (each with the host-clock probe taken before it, ``probe_s``, runtime/launches.py):
- ``host call``: host seconds per call of a burst of BURST bare calls of one kind, no sync inside:
  torch ops that launch a kernel (in place, allocating, indexing), cuBLAS products, views and
  allocations, ``.item()`` (a sync), and Triton launches of a trivial kernel with n runtime
  arguments (40% tensors, like the runtime's kernels) for several n;
- ``runtime launch``: the runtime's own step and attention-only calls, host-bound
  (benchmarks/bench_launch_runtime.py), with their launch counts.
The kinds vary one at a time, so each cost is identified on its own (the earlier fit over the
runtime's calls alone was colinear: its kinds rise together). ``--fit`` prints the fields and the
runtime calls' residuals; ``--write`` puts them into a profile, with their source.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.records import append_jsonl, read_jsonl  # noqa: E402

BURST = 100  # calls per timed burst: well inside CUDA's launch queue
REPEATS = 9
TRITON_ARGS = (2, 8, 16, 32, 48)
TENSOR_SHARE = 0.4  # of a launch's arguments: the decode kernel passes 20 tensors among ~50 arguments
DEVICE = "cuda"  # --device cpu: a dry run under TRITON_INTERPRET=1 (times meaningless)


def _sync() -> None:
    import torch
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _triton_kernel(n_args: int):
    """A trivial @triton.jit kernel with ``n_args`` runtime arguments (written to a file: Triton
    reads a kernel's source), and the arguments to launch it with."""
    import torch
    tensors = max(1, round(TENSOR_SHARE * n_args))
    names = [f"t{i}" for i in range(tensors)] + [f"a{i}" for i in range(n_args - tensors)]
    source = ("import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
              f"def k({', '.join(names)}, BLOCK: tl.constexpr):\n"
              "    offs = tl.arange(0, BLOCK)\n"
              f"    tl.store(t0 + offs, tl.load(t0 + offs) + {names[-1] if n_args > tensors else 1})\n")
    path = os.path.join(tempfile.mkdtemp(), f"host_kernel_{n_args}.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"host_kernel_{n_args}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.zeros(64, device=DEVICE)
    ints = [3 + 2 * i for i in range(n_args - tensors)]  # odd, never 1: one specialization
    return lambda: module.k[(1,)](*([x] * tensors), *ints, BLOCK=64)


def bare_calls() -> list[tuple[str, str, int, object]]:
    """(name, kind, Triton arguments, fn) for each bare call timed."""
    import torch
    import torch.nn.functional as F
    x, y = torch.randn(256, device=DEVICE), torch.randn(256, device=DEVICE)
    idx = torch.randint(0, 256, (64,), device=DEVICE)
    w = torch.randn(512, 256, device=DEVICE, dtype=torch.bfloat16)
    v = torch.randn(4, 256, device=DEVICE, dtype=torch.bfloat16)
    one = torch.ones(1, device=DEVICE)
    calls = [("add_", "torch", 0, lambda: x.add_(1.0)), ("mul", "torch", 0, lambda: torch.mul(x, y)),
             ("index_select", "torch", 0, lambda: x.index_select(0, idx)),
             ("linear", "torch_gemm", 0, lambda: F.linear(v, w)), ("matmul", "torch_gemm", 0, lambda: v @ w.t()),
             ("view", "torch_host", 0, lambda: x.view(16, 16)), ("slice", "torch_host", 0, lambda: x[1:]),
             ("empty", "torch_host", 0, lambda: torch.empty(256, device=DEVICE)),
             ("item", "sync", 0, lambda: one.item())]
    return calls + [(f"triton {n} args", "triton", n, _triton_kernel(n)) for n in TRITON_ARGS]


def burst_time(fn, repeats: int = REPEATS) -> tuple[float, float]:
    """(host seconds per call, probe): medians over bursts of BURST calls, each after a probe."""
    from kvsim.runtime.launches import host_probe
    for _ in range(3):
        fn()
    times, probes = [], []
    for _ in range(repeats):
        _sync()
        probes.append(host_probe(DEVICE))
        _sync()
        start = time.perf_counter()
        for _ in range(BURST):
            fn()
        times.append((time.perf_counter() - start) / BURST)
    _sync()
    return statistics.median(times), statistics.median(probes)


def measure(out: str, methods, env, repeats: int, calls: int) -> None:
    """Bare calls, then each method's runtime calls, appended to ``out`` as they finish (a run
    cut short keeps what it measured)."""
    from bench_launch_runtime import measure as runtime_calls
    rows = []
    for name, kind, n_args, fn in bare_calls():
        host_s, probe_s = burst_time(fn)
        rows.append({"kind": "host call", "call": kind, "op": name, "args": n_args, "host_s": host_s,
                     "probe_s": probe_s, **env})
        print(f"{name:16} {kind:10} {host_s * 1e6:7.2f} us  probe {probe_s * 1e6:5.2f} us", flush=True)
    append_jsonl(out, rows)
    for method in methods:
        append_jsonl(out, runtime_calls(method, env, repeats, calls))


def fit(path: str, write: str | None) -> None:
    from kvsim.host_fit import host_fit, profile_fields
    records = read_jsonl(path)
    cost = host_fit(records)
    for key in ("torch", "torch_gemm", "torch_host", "triton", "triton_arg", "sync", "python_torch", "python_triton", "probe"):
        print(f"{key:13} {cost[key] * 1e6:8.3f} us")
    res = [abs(r) for r in cost["residuals"]]
    if res:
        print(f"runtime calls: |relative error| median {statistics.median(res):.1%}, worst {max(res):.1%} over {len(res)}")
    if write:
        from kvsim.calibrate import patch_profile_text
        first = records[0]
        note = (f"measured {first['date'][:10]}, {first['device']}, torch {first['torch']}, triton {first['triton']}: "
                f"python3 benchmarks/bench_host.py --fit {path}")
        with open(write) as f:
            text = f.read()
        with open(write, "w") as f:
            f.write(patch_profile_text(text, profile_fields(cost, note)))
        print(f"wrote the host fields of {write}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--fit")
    ap.add_argument("--write", help="with --fit: the profile YAML to write the host fields into")
    ap.add_argument("--methods", default="dense,streamingllm,h2o,adore,tidaldecode,sparq,quest,alisa,duoattention")
    ap.add_argument("--repeats", type=int, default=7, help="bursts per runtime call")
    ap.add_argument("--calls", type=int, default=10, help="runtime calls per burst")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the bare calls under TRITON_INTERPRET=1")
    args = ap.parse_args()
    if args.fit:
        return fit(args.fit, args.write)
    global DEVICE
    DEVICE = args.device
    if DEVICE != "cuda":
        for name, kind, n_args, fn in bare_calls():
            print(name, kind, n_args, burst_time(fn, 1))
        return
    from bench_launch import environment
    measure(args.out, args.methods.split(","), environment(), args.repeats, args.calls)


if __name__ == "__main__":
    main()
