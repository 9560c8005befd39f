"""Host-side cost of a kernel launch and of a host synchronisation, apart from the validation
sweep (the eager execution model's profile fields). On a CUDA GPU:

    python3 benchmarks/bench_launch.py --out $OUT/h100-launch.jsonl

For each kind of launch the eager runtime issues (a torch elementwise op, a cuBLAS GEMV, a
torch.topk, an index op, Triton kernels with few and with many arguments) it records:
- ``host_s``: the host's time to issue one launch (perf_counter around a burst of launches that
  stays inside the launch queue, no sync), the median over repeats;
- ``gpu_s``: the same launches replayed from a CUDA graph, per launch (the device-side floor);
- ``eager_s``: a long burst with a sync at the end, per launch: max(host, device) in steady state.
And ``sync_s``: torch.cuda.synchronize() on an idle device, and ``item_s``: a .item() read back.
"""
import argparse
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.records import append_jsonl  # noqa: E402

BURST = 200  # launches per host-timed burst: well inside CUDA's launch queue (~1000 entries)
REPEATS = 30


def _triton_kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def few(x_ptr, n, BLOCK: tl.constexpr):  # 2 runtime arguments
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

    @triton.jit
    def many(x_ptr, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18,
             a19, a20, n, BLOCK: tl.constexpr):  # 22 runtime arguments, like the decode kernels
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + a1, mask=offs < n)
    return few, many


def launchers():
    import torch
    import torch.nn.functional as F
    dev = "cuda"
    x = torch.randn(256, device=dev)
    w = torch.randn(256, 256, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, 256, device=dev, dtype=torch.bfloat16)
    row = torch.randn(4, 4096, device=dev)
    idx = torch.randint(0, 256, (64,), device=dev)
    few, many = _triton_kernels()
    ints = list(range(1, 21))
    return {
        "torch elementwise (x.add_)": lambda: x.add_(1.0),
        "torch GEMV (F.linear, cuBLAS)": lambda: F.linear(v, w),
        "torch.topk (single block)": lambda: torch.topk(row, 64, sorted=False),
        "torch index_select": lambda: x.index_select(0, idx),
        "triton kernel, 2 args": lambda: few[(1,)](x, 256, BLOCK=256),
        "triton kernel, 22 args": lambda: many[(1,)](x, *ints, 256, BLOCK=256),
    }


def host_time(fn) -> float:
    import torch
    times = []
    for _ in range(REPEATS):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(BURST):
            fn()
        times.append((time.perf_counter() - start) / BURST)
    torch.cuda.synchronize()
    return statistics.median(times)


def eager_time(fn, n=2000) -> float:
    import torch
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def graph_time(fn) -> float | None:
    import torch

    from kvsim.kernels._common import capture_graph
    try:
        replay = capture_graph(fn, repeat=BURST)
    except Exception:  # noqa: BLE001 - some ops cannot be captured: no device floor then
        torch.cuda.synchronize()
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        replay()
    times = []
    for _ in range(REPEATS):
        start.record()
        replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / BURST)
    return statistics.median(times)


def sync_times() -> dict:
    import torch
    x = torch.ones(1, device="cuda")
    syncs, items = [], []
    for _ in range(200):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.cuda.synchronize()
        syncs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        x.add_(1.0).item()
        items.append(time.perf_counter() - t0)
    return {"sync_s": statistics.median(syncs), "item_s": statistics.median(items)}


def environment() -> dict:
    import torch
    import triton
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 " + " ".join(sys.argv), "cpu": _cpu_name()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    env, records = environment(), []
    for name, fn in launchers().items():
        for _ in range(20):
            fn()  # compile, load, warm the caching allocator
        rec = {"kind": "launch", "op": name, "host_s": host_time(fn), "eager_s": eager_time(fn),
               "gpu_s": graph_time(fn), **env}
        records.append(rec)
        gpu = f"{rec['gpu_s'] * 1e6:7.2f}" if rec["gpu_s"] else "   n/a"
        print(f"{name:32} host {rec['host_s'] * 1e6:7.2f} us  eager {rec['eager_s'] * 1e6:7.2f} us  graph {gpu} us")
    sync = {"kind": "sync", **sync_times(), **env}
    print(f"sync {sync['sync_s'] * 1e6:.2f} us, .item() {sync['item_s'] * 1e6:.2f} us")
    append_jsonl(args.out, records + [sync])


if __name__ == "__main__":
    main()
