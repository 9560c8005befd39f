"""torch.topk, sorted and unsorted, at the row shapes the methods select over (SparQ, ALISA,
Quest, TidalDecode at 64k/128k), by CUDA-graph replay over rotated inputs: what the runtime's
selections cost next to the one launch and one read kvsim charges (kvsim.methods.attention
topk_op). 2026-11-26: a one-program-per-row Triton radix select was 5-17x slower than
torch.topk(sorted=False) at the long rows (too few programs) and was dropped. On a CUDA GPU:
    python3 benchmarks/bench_topk.py [--out $OUT/h100-topk.jsonl]
"""
import argparse
import os
import sys

import torch
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.bench_kernels import environment  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402

SHAPES = [  # (what, rows, n, k)
    ("sparq B=8 S=64k", 64, 65536, 4096), ("sparq B=1 S=128k", 8, 131072, 8192),
    ("alisa B=8 S=64k", 8, 52429, 6554), ("alisa B=1 S=128k", 1, 104858, 13107),
    ("quest B=8 S=64k", 256, 4095, 255), ("tidal B=8 S=64k", 256, 65535, 256),
]


def timed(fn, sets) -> float:
    return do_bench_cudagraph(lambda: [fn(x) for x in sets], rep=50, return_mode="median") / len(sets) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    env = environment()
    rows = []
    for what, r, n, k in SHAPES:
        sets = [torch.randn(r, n, device="cuda") for _ in range(4)]
        row = {"what": what, "rows": r, "n": n, "k": k,
               "torch_sorted_us": timed(lambda x: x.topk(k, dim=-1), sets),
               "torch_unsorted_us": timed(lambda x: x.topk(k, dim=-1, sorted=False), sets)}
        rows.append({**env, **row})
        print(f"{what:18s} torch.topk {row['torch_sorted_us']:7.1f} us "
              f"(unsorted {row['torch_unsorted_us']:7.1f} us)", flush=True)
    if args.out:
        append_jsonl(args.out, rows)


if __name__ == "__main__":
    main()
