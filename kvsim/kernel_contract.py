"""The kernel contract: what the Triton kernels (kernels/, kvsim/methods/*/kernels*.py), the
reference runtime and the cost model agree on — the split-K policy (how many programs, how many
rows each), the widths of token indices and scores, and when torch.topk takes its multi-block
select. numpy only: the simulator core imports it, and so do the kernels and the runtime.
"""
from __future__ import annotations

import numpy as np

from .profiles import load_profile

SPLIT_MIN_ROWS = 256  # the fewest rows one split-K program takes (kernels/decode.py)
PROGRAMS_PER_SM = 4  # programs the gathered/windowed/int8 kernels want in flight per SM


def target_programs(sm_count: float) -> int:
    """The kernels' launch policy on a GPU with ``sm_count`` SMs (its profile's compute.sm_count)."""
    return int(PROGRAMS_PER_SM * sm_count)


# the policy on the H100 SXM the kernels were tuned on (4 programs per SM); the cost model follows it
TARGET_PROGRAMS = target_programs(load_profile("h100-sxm").compute.sm_count.value)
# Dense attention over a contiguous cache: about one wave on 132 SMs. At batch 1 on the H100,
# 16 splits beat 33/66/132 (within 2% of SDPA instead of 14% slower at 32k); gathered, windowed,
# int8 and SparQ kernels lose up to 40% with that few (benchmarks/tune_small.py, 2026-11-22).
DENSE_TARGET_PROGRAMS = 128
INDEX_BYTES = 4.0  # int32 token indices
SCORE_BYTES = 4.0  # fp32 scores


def split_count(batch, kv_heads, rows, target=TARGET_PROGRAMS):
    """Split-K factor: about ``target`` programs, each over at least SPLIT_MIN_ROWS rows."""
    wanted = np.ceil(target / (np.asarray(batch) * kv_heads))
    return np.clip(wanted, 1.0, np.maximum(np.ceil(np.asarray(rows) / SPLIT_MIN_ROWS), 1.0))


def torch_topk_multiblock(slices, size):
    """Whether torch.topk takes its multi-block radix select (about 20 kernels) for ``slices``
    rows of ``size``: PyTorch aten/src/ATen/native/cuda/TensorTopK.cu ``should_use_multiblock``
    (the CUB scan-by-key branch); otherwise one single-block kernel per call."""
    n, s = np.asarray(slices, dtype=float), np.asarray(size, dtype=float)
    return (((n <= 20) & (s >= 20000)) | ((n > 20) & (n <= 40) & (s >= 10000))
            | ((n > 40) & (n <= 80) & (s >= 8000)) | ((n > 80) & (n < 200) & (s >= 5000))
            | ((n >= 200) & (n < 800) & (s >= 3000)) | ((n >= 800) & (n <= 4000) & (s >= 800))
            | ((n > 4000) & (s >= 400)))


def radix_select_passes(rows, k: int) -> np.ndarray:
    """Per row of ``rows`` [B, n] (float32), the 2-bit radix passes torch's single-block select
    makes to find the k-th largest (aten SortingRadixSelect.cuh radixSelect: each pass scans the
    whole row and narrows the k-th value's key prefix by 2 bits; it stops once that prefix is the
    k-th value's alone), 16 where it never is (ties). Keys are the float's bits as unsigned, the
    sign bit flipped and negatives inverted (so a larger value has a larger key)."""
    bits = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32).astype(np.int64)
    keys = np.where(bits >> 31 == 1, ~bits & 0xFFFFFFFF, bits | 0x80000000)
    kth = np.partition(keys, -k, axis=-1)[:, -k][:, None]  # the k-th largest key
    alone = np.stack([(keys >> (32 - 2 * p) == kth >> (32 - 2 * p)).sum(-1) == 1 for p in range(1, 17)], -1)
    return np.where(alone.any(-1), alone.argmax(-1) + 1, 16)
