"""torch.topk, sorted and unsorted, at the row shapes the methods select over (SparQ, ALISA,
Quest, TidalDecode at 64k/128k), by CUDA-graph replay over rotated inputs: what the runtime's
selections cost next to the one launch and one read kvsim charges (kvsim.methods.attention
topk_op). 2026-11-26: a one-program-per-row Triton radix select was 5-17x slower than
torch.topk(sorted=False) at the long rows (too few programs) and was dropped. On a CUDA GPU:
    python3 benchmarks/bench_topk.py [--out $OUT/h100-topk.jsonl]
"""
import argparse
import datetime
import json
import os
import sys

import torch
import triton
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.commands.measure import _driver  # noqa: E402

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
    meta = {"device": torch.cuda.get_device_name(), "driver": _driver(), "torch": torch.__version__,
            "triton": triton.__version__, "date": datetime.date.today().isoformat(),
            "command": "python3 " + " ".join(sys.argv)}
    rows = []
    for what, r, n, k in SHAPES:
        sets = [torch.randn(r, n, device="cuda") for _ in range(4)]
        row = {"what": what, "rows": r, "n": n, "k": k,
               "torch_sorted_us": timed(lambda x: x.topk(k, dim=-1), sets),
               "torch_unsorted_us": timed(lambda x: x.topk(k, dim=-1, sorted=False), sets)}
        rows.append({**meta, **row})
        print(f"{what:18s} torch.topk {row['torch_sorted_us']:7.1f} us "
              f"(unsorted {row['torch_unsorted_us']:7.1f} us)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("".join(json.dumps(x) + "\n" for x in rows))


if __name__ == "__main__":
    main()
