"""Dense decode at B=1 (the point furthest from SDPA in h100-kernels.jsonl): time every launch
config and split count by CUDA-graph replay over rotated inputs, against SDPA. On a CUDA GPU."""
import itertools
import os
import sys

import torch
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.kernels import _common  # noqa: E402
from kvsim.kernels.decode import decode_attention  # noqa: E402


def run(B, S, sets=8):
    data = [(torch.randn(B, 32, 128, device="cuda", dtype=torch.bfloat16),
             torch.randn(B, 8, S, 128, device="cuda", dtype=torch.bfloat16),
             torch.randn(B, 8, S, 128, device="cuda", dtype=torch.bfloat16),
             torch.full((B,), S, device="cuda", dtype=torch.int32)) for _ in range(sets)]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def timed(call):
        return do_bench_cudagraph(lambda: [call(*d) for d in data], rep=100, return_mode="median") / sets * 1e3

    base = timed(lambda q, k, v, l: sdpa(q[:, :, None], k, v, enable_gqa=True))
    print(f"B={B} S={S} sdpa {base:.1f} us", flush=True)
    results = []
    for (bn, w, st), splits in itertools.product(
            itertools.product([32, 64, 128], [4, 8], [2, 3, 4]), [16, 33, 66, 132]):
        _common.set_config("attention", BLOCK_N=bn, num_warps=w, num_stages=st)
        us = timed(lambda q, k, v, l: decode_attention(q, k, v, l, num_splits=splits))
        results.append((us, bn, w, st, splits))
    for us, bn, w, st, splits in sorted(results)[:8]:
        print(f"  {us:7.1f} us ({us / base:.2f} of sdpa) BLOCK_N={bn} warps={w} stages={st} splits={splits}")


for B, S in [(1, 32768), (1, 4096), (1, 131072)]:
    run(B, S)
