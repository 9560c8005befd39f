"""GPU memory as the device reports it, what the CUDA context and libraries reserve, and the
largest batch the reference runtime really runs (apart from the validation sweep). On a GPU:

    python3 benchmarks/bench_memory.py --out $OUT/h100-memory.jsonl [--cases quick]

Records:
- ``kind: capacity``: nvidia-smi's memory.total (MiB), torch's total_memory (bytes), and the free
  bytes after each stage (CUDA context, cuBLAS handle and workspace, a Triton kernel), so the
  context's reserve is ``total - free`` with nothing allocated by the program;
- ``kind: max_batch``: for a model x method x context, the largest batch whose engine (weights,
  KV cache, scratch) survives a synthetic prefill and 3 eager decode steps, and the smallest one
  that runs out of memory (bisection), with peak allocated and reserved bytes at the largest.
"""
import argparse
import gc
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.bench_launch import environment  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402

CASES = [  # (model, layers or None for all, method, params, context)
    ("llama-3.1-8b", None, "dense", {}, 32768),
    ("llama-3.1-8b", None, "quest", {}, 65536),
    ("llama-2-7b", None, "sparq", {}, 16384),
    ("llama-3.1-8b", None, "duoattention", {}, 65536),
    ("llama-2-13b", None, "dense", {}, 8192),
]


def smi_total_mib() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def capacity_record() -> dict:
    import torch
    import torch.nn.functional as F
    torch.cuda.init()
    torch.empty(1, device="cuda")
    stages = {"context": torch.cuda.mem_get_info()[0]}
    a = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
    F.linear(a, torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16))
    torch.cuda.synchronize()
    stages["cublas"] = torch.cuda.mem_get_info()[0] + torch.cuda.memory_reserved()
    from benchmarks.bench_launch import _triton_kernels
    few, _ = _triton_kernels()
    x = torch.zeros(256, device="cuda")
    few[(1,)](x, 256, BLOCK=256)
    torch.cuda.synchronize()
    stages["triton"] = torch.cuda.mem_get_info()[0] + torch.cuda.memory_reserved()
    props = torch.cuda.get_device_properties(0)
    total = props.total_memory
    return {"kind": "capacity", "smi_total_mib": smi_total_mib(), "torch_total_bytes": total,
            "sm_count": props.multi_processor_count, "l2_bytes": getattr(props, "L2_cache_size", None),
            "free_after_bytes": stages, "reserve_bytes": {k: total - v for k, v in stages.items()}}


def runs(model, layers, method, params, seq, batch) -> tuple[bool, int, int]:
    """Does the runtime hold this batch through prefill and 3 decode steps? And its peaks."""
    import torch
    from kvsim.runtime.engine import Engine
    engine = None
    torch.cuda.reset_peak_memory_stats()
    try:
        engine = Engine(model, method, params, batch=batch, max_seq=seq + 8, n_layers=layers)
        engine.prefill_synthetic(seq - 4, context=seq)
        for _ in range(3):
            engine.step()
        torch.cuda.synchronize()
        ok = True
    except torch.cuda.OutOfMemoryError:
        ok = False
    peaks = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    return ok, *peaks


def max_batch(model, layers, method, params, seq, limit=4096) -> dict:
    lo, hi, peaks = 0, 1, (0, 0)
    while hi <= limit:  # double until a batch fails
        ok, *p = runs(model, layers, method, params, seq, hi)
        if not ok:
            break
        lo, peaks, hi = hi, p, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, *p = runs(model, layers, method, params, seq, mid)
        lo, hi, peaks = (mid, hi, p) if ok else (lo, mid, peaks)
    return {"kind": "max_batch", "model": model, "n_layers": layers, "method": method, "params": params,
            "seq": seq, "max_batch_ran": lo, "first_oom_batch": hi if hi <= limit else None,
            "peak_allocated_bytes": peaks[0], "peak_reserved_bytes": peaks[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", type=int, default=len(CASES), help="how many of the cases to probe")
    ap.add_argument("--model", default=None, help="probe only the cases of this model")
    args = ap.parse_args()
    env = environment()
    cap = {**capacity_record(), **env}
    append_jsonl(args.out, [cap])
    print(f"nvidia-smi {cap['smi_total_mib']} MiB; torch {cap['torch_total_bytes']} B; "
          f"reserve {', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in cap['reserve_bytes'].items())}", flush=True)
    for model, layers, method, params, seq in CASES[:args.cases]:
        if args.model not in (None, model):
            continue
        rec = {**max_batch(model, layers, method, params, seq), **env}
        append_jsonl(args.out, [rec])
        print(f"{model:14} {method:13} S={seq:6}: max batch ran {rec['max_batch_ran']}, OOM at "
              f"{rec['first_oom_batch']}, peak {rec['peak_allocated_bytes'] / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
