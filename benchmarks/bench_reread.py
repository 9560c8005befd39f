"""Rows read again by the G programs of a KV head: the gathered decode kernel with one list per
query head where the G lists of a group are the same rows (Quest's per-query-head page lists
when the budget nearly covers the cache), against one shared list per KV head (each row loaded
once), by CUDA-graph replay over rotated caches (cold L2). The shared list moves the KV bytes
from HBM; the per-head lists load G times those bytes, the repeats served by L2 while the
group's programs run side by side. The effective rate of those loads is a profile's
``memory.reread_Bps``. On a CUDA GPU:
    python3 benchmarks/bench_reread.py --out $OUT/h100-reread.jsonl
Anywhere, the rate from such a file (the median over the shapes):
    python3 benchmarks/bench_reread.py --fit benchmarks/results/h100-reread.jsonl
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.fits import reread_fit  # noqa: E402

SHAPES = ((1, 4096), (8, 4096), (32, 4096), (8, 16384), (32, 16384), (1, 65536), (8, 65536))  # (B, rows)
H, HKV, D = 32, 8, 128


def measure(out_path):
    import torch
    from triton.testing import do_bench_cudagraph

    from benchmarks.bench_kernels import copies, environment
    from kvsim.kernels.gather import gathered_decode_attention
    from kvsim.records import append_jsonl
    env, rows = environment(), []
    for B, S in SHAPES:
        kv_bytes = B * HKV * S * 2 * D * 2
        sets = [(torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16),
                 torch.randn(B, HKV, S, D, device="cuda", dtype=torch.bfloat16),
                 torch.randn(B, HKV, S, D, device="cuda", dtype=torch.bfloat16))
                for _ in range(copies(kv_bytes, torch.cuda.get_device_properties(0).L2_cache_size))]
        times = {}
        for what, heads in (("shared", HKV), ("per_head", H)):
            idx = torch.arange(S, device="cuda", dtype=torch.int32).expand(B, heads, S).contiguous()
            cnt = torch.full((B, heads), S, device="cuda", dtype=torch.int32)
            call = lambda: [gathered_decode_attention(q, k, v, idx, cnt) for q, k, v in sets]  # noqa: E731
            call()  # compile and load the kernel outside the graph capture
            torch.cuda.synchronize()
            times[what] = do_bench_cudagraph(call, rep=40, return_mode="median") / len(sets) * 1e-3
        row = {**env, "batch": B, "rows": S, "heads": H, "kv_heads": HKV, "head_dim": D,
               "kv_bytes": kv_bytes, "loaded_bytes": kv_bytes * H // HKV,
               "shared_s": times["shared"], "per_head_s": times["per_head"]}
        rows.append(row)
        print(f"B={B:3d} S={S:6d} shared {times['shared'] * 1e6:8.1f} us ({kv_bytes / times['shared'] / 1e12:4.2f} TB/s)"
              f"  per-head {times['per_head'] * 1e6:8.1f} us ({row['loaded_bytes'] / times['per_head'] / 1e12:4.2f} TB/s"
              f" loaded)", flush=True)
    if out_path:
        append_jsonl(out_path, rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--fit", help="a JSONL of this script's runs: print the re-read rate")
    args = ap.parse_args()
    if args.fit:
        with open(args.fit) as f:
            print(reread_fit([json.loads(line) for line in f if line.strip()]))
        return
    measure(args.out)


if __name__ == "__main__":
    main()
