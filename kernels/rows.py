"""One K row and one V row per (sequence, KV head) written at a per-sequence slot, in one launch:
k[b, h, slot[b]] = k_new[b, h] and v[b, h, slot[b]] = v_new[b, h] (ADORE's insertion of the new
token into the slot it released). torch's advanced-index put takes an index_put and a contiguous
copy of each strided source, four kernels; the sources here may be any strided views (a scratch
row of the cache itself, a token of a projection). Read 2·d·b, write 2·d·b per (sequence, head).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import launcher, pow2_at_least


@triton.jit
def _put_rows_kernel(K, V, KN, VN, SLOT, s_kb, s_kh, s_kr, s_vb, s_vh, s_vr,
                     s_nb, s_nh, s_mb, s_mh, heads, D: tl.constexpr, D_PAD: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // heads).to(tl.int64)
    h = (pid % heads).to(tl.int64)
    slot = tl.load(SLOT + b).to(tl.int64)
    d = tl.arange(0, D_PAD)
    mask = d < D
    k = tl.load(KN + b * s_nb + h * s_nh + d, mask=mask)
    v = tl.load(VN + b * s_mb + h * s_mh + d, mask=mask)
    tl.store(K + b * s_kb + h * s_kh + slot * s_kr + d, k, mask=mask)
    tl.store(V + b * s_vb + h * s_vh + slot * s_vr + d, v, mask=mask)


def _check(k, v, slots, k_new, v_new):
    B, H, _, d = k.shape
    if v.shape != k.shape or k_new.shape != (B, H, d) or v_new.shape != (B, H, d) or slots.shape != (B,):
        raise ValueError(f"want k, v [B,H,S,d], slots [B], k_new, v_new [B,H,d]; got k{tuple(k.shape)}, "
                         f"v{tuple(v.shape)}, slots{tuple(slots.shape)}, k_new{tuple(k_new.shape)}, "
                         f"v_new{tuple(v_new.shape)}")
    if k_new.dtype != k.dtype or v_new.dtype != v.dtype:
        raise ValueError(f"dtypes differ: cache {k.dtype}/{v.dtype}, rows {k_new.dtype}/{v_new.dtype}")


def put_rows(k, v, slots, k_new, v_new) -> None:
    """In place: k[b, :, slots[b]] = k_new[b], v[b, :, slots[b]] = v_new[b]."""
    _check(k, v, slots, k_new, v_new)
    B, H, _, d = k.shape
    if any(t.stride(-1) != 1 for t in (k, v, k_new, v_new)):
        raise ValueError("the last dim of the cache and of the new rows must be contiguous")
    launcher(_put_rows_kernel, k)[(B * H,)](
        k, v, k_new, v_new, slots, *k.stride()[:3], *v.stride()[:3], *k_new.stride()[:2],
        *v_new.stride()[:2], H, D=d, D_PAD=pow2_at_least(d), num_warps=1)


def put_rows_ref(k, v, slots, k_new, v_new) -> None:
    """Torch reference of :func:`put_rows` (advanced indexing)."""
    _check(k, v, slots, k_new, v_new)
    b = torch.arange(k.shape[0], device=k.device)
    k[b, :, slots.long()] = k_new
    v[b, :, slots.long()] = v_new
