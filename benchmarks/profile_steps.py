"""Where one decode step's GPU time goes, per method (torch.profiler kernel table), to find why
a method's measured time departs from kvsim's prediction. On a CUDA GPU:

    python3 benchmarks/profile_steps.py --out $OUT/h100-profile.json
    python3 benchmarks/profile_steps.py --methods adore,quest --model llama-2-7b \
        --configs 4096x32,16384x1 --out $OUT/profile-small.json   (keys "method seq x batch")
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.runtime.sweep_process import cut_model_params  # noqa: E402
from kvsim.methods import METHODS  # noqa: E402
from kvsim.runtime.measure import _engine  # noqa: E402


def kernel_table(engine, fn, top: int) -> list[dict]:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [{"kernel": e.key[:120], "calls": e.count, "us": e.self_device_time_total}
            for e in prof.key_averages() if e.self_device_time_total > 0]
    return sorted(rows, key=lambda r: -r["us"])[:top]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seq", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--configs", help="SEQxBATCH,...: instead of --seq/--batch, keys 'method SxB'")
    parser.add_argument("--offload", type=float, default=0.0, help="oldest fraction of the KV cache in pinned host memory")
    args = parser.parse_args()
    configs = ([tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
               if args.configs else [(args.seq, args.batch)])
    result = {}
    for method in args.methods.split(","):
        for seq, batch in configs:
            key = f"{method} {seq}x{batch}" if args.configs else method
            engine, _ = _engine(method, seq, batch, args.model, args.layers,
                                cut_model_params(method, args.layers), 8, offload=args.offload)
            result[key] = {"step": kernel_table(engine, engine.step, 40),
                           "attention": kernel_table(engine, engine.attention_only_step, 40)}
            for part in ("step", "attention"):
                rows = result[key][part]
                print(f"{key} {part}: {sum(r['calls'] for r in rows)} kernels, "
                      f"{sum(r['us'] for r in rows):.0f} us (top 40 kinds)")
            for r in result[key]["attention"][:6]:
                print(f"   {r['us']:9.0f} us  x{r['calls']:<4d} {r['kernel'][:90]}")
            del engine
            torch.cuda.empty_cache()
    with open(args.out, "w") as out:
        json.dump(result, out, indent=1)


if __name__ == "__main__":
    main()
