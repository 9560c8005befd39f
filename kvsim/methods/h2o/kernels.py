"""H2O's eviction and insertion in one launch (arXiv 2306.14048 §4; FMInference/H2O
``_update_hh_score`` + top-k): per (sequence, KV head), once the compact cache is full, the slot
with the least accumulated attention among those not holding one of the last ``recent``
positions takes the new token: its K and V are written there, its position recorded and its
score reset to 0.

One program per (sequence, KV head): read cap·(4 + 8) bytes (scores, int64 positions), write
2·d·b (K and V) + 8 + 4. Ties: the lowest slot, as torch.argmin.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernels._common import interpreting, launcher

MAX_BLOCK = 4096  # slots per loop iteration at most: a program scans its cap slots in cdiv(cap, block)
# dependent steps, so one step up to 4096 (B = 1 at 16k, cap 3277: 5.1 us a layer on the H100 in
# 1024-slot steps, benchmarks/results/h100-profile-small.json)


@triton.jit
def _evict_insert_kernel(ACC, POS, K, V, KN, VN, cap, pos, recent,
                         s_ab, s_ah, s_pb, s_ph, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
                         s_nb, s_nh, s_mb, s_mh, heads, D: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // heads).to(tl.int64)
    h = (pid % heads).to(tl.int64)
    best = float("inf")
    slot = 0
    for off in range(0, cap, BLOCK):
        r = off + tl.arange(0, BLOCK)
        valid = r < cap
        score = tl.load(ACC + b * s_ab + h * s_ah + r, mask=valid, other=float("inf"))
        held = tl.load(POS + b * s_pb + h * s_ph + r, mask=valid, other=0)
        score = tl.where(held >= pos - recent, float("inf"), score)  # the last `recent` stay
        low = tl.min(score, 0)
        where = off + tl.argmin(score, 0)
        better = low < best  # strict: an earlier block keeps a tie
        slot = tl.where(better, where, slot)
        best = tl.where(better, low, best)
    slot = slot.to(tl.int64)
    d = tl.arange(0, D)
    tl.store(K + b * s_kb + h * s_kh + slot * s_kn + d, tl.load(KN + b * s_nb + h * s_nh + d))
    tl.store(V + b * s_vb + h * s_vh + slot * s_vn + d, tl.load(VN + b * s_mb + h * s_mh + d))
    tl.store(POS + b * s_pb + h * s_ph + slot, pos.to(tl.int64))
    tl.store(ACC + b * s_ab + h * s_ah + slot, 0.0)


def _check(acc, slot_pos, k, v, k_new, v_new):
    B, H, cap = acc.shape
    if slot_pos.shape != acc.shape or slot_pos.dtype != torch.int64 or acc.dtype != torch.float32:
        raise ValueError("acc must be fp32 and slot_pos int64, both [B, Hkv, cap]")
    if k.shape[:2] != (B, H) or k.shape[2] < cap or v.shape != k.shape:
        raise ValueError(f"caches must be [{B}, {H}, >= {cap}, d], got {tuple(k.shape)}")
    if k_new.shape != (B, H, k.shape[3]) or v_new.shape != k_new.shape:
        raise ValueError(f"new rows must be [{B}, {H}, {k.shape[3]}], got {tuple(k_new.shape)}")


def evict_insert(acc, slot_pos, k, v, k_new, v_new, pos: int, recent: int) -> None:
    """In place (module doc). acc [B,Hkv,cap] fp32, slot_pos [B,Hkv,cap] int64, k/v caches
    [B,Hkv,rows>=cap,d], k_new/v_new [B,Hkv,d] in the caches' dtype; unit last strides."""
    _check(acc, slot_pos, k, v, k_new, v_new)
    B, H, cap = acc.shape
    d = k.shape[3]
    block = min(triton.next_power_of_2(max(cap, 16)), MAX_BLOCK)
    launcher(_evict_insert_kernel, acc)[(B * H,)](
        acc, slot_pos, k, v, k_new, v_new, cap, int(pos), int(recent),
        acc.stride(0), acc.stride(1), slot_pos.stride(0), slot_pos.stride(1),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1), H,
        D=d, BLOCK=block, num_warps=8 if block >= 2048 else 4, **({} if interpreting() else {"num_stages": 1}))


def evict_insert_ref(acc, slot_pos, k, v, k_new, v_new, pos: int, recent: int) -> None:
    """Torch reference of :func:`evict_insert` (in place)."""
    _check(acc, slot_pos, k, v, k_new, v_new)
    B, H, _ = acc.shape
    slot = acc.masked_fill(slot_pos >= pos - recent, float("inf")).argmin(-1)  # [B,Hkv]
    b, h = torch.arange(B, device=acc.device)[:, None], torch.arange(H, device=acc.device)[None, :]
    k[b, h, slot], v[b, h, slot] = k_new, v_new
    slot_pos[b, h, slot] = pos
    acc[b, h, slot] = 0.0


__all__ = ["evict_insert", "evict_insert_ref"]
