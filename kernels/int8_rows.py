"""The new token's K and V quantized and written into an INT8 cache in one launch (ALISA §5,
arXiv 2403.17312; the format of kernels/int8kv.py, bit for bit).

Per (sequence, KV head): read the two rows k_new, v_new [d] (activation dtype), write d int8 each
and an fp16 scale and zero point each at cache row ``slot`` (an int, or one slot per sequence):
read 2·d·b_a, write 2·(d + 4) bytes. ``quantize_kv`` in torch costs a dozen elementwise launches
per tensor; this is one for both.

Rounding as torch's: the scale and zero go through fp16 round-to-nearest, x/scale is an IEEE
division (div_rn), and round-half-even is (q + 1.5·2²³) − 1.5·2²³ in fp32 (exact for |q| < 2²²).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import interpreting, launcher, pow2_at_least
from .int8kv import MIN_SCALE, quantize_kv

_RNE: tl.constexpr = tl.constexpr(12582912.0)  # 1.5·2^23: adding and subtracting it rounds half-even


@triton.jit
def _quantize_store(X, Q, S, Z, q_off, s_off, col, mask, MIN: tl.constexpr):
    x = tl.load(X + col, mask=mask, other=0.0).to(tl.float32)
    lo = tl.min(tl.where(mask, x, float("inf")), 0)
    hi = tl.max(tl.where(mask, x, float("-inf")), 0)
    scale = tl.maximum(tl.math.div_rn(hi - lo, 255.0), MIN).to(tl.float16)
    sf = scale.to(tl.float32)
    zero = (-128.0 - tl.math.div_rn(lo, sf)).to(tl.float16)
    q = tl.math.div_rn(x, sf) + zero.to(tl.float32)
    q = (q + _RNE) - _RNE
    q = tl.minimum(tl.maximum(q, -128.0), 127.0)
    tl.store(Q + q_off + col, q.to(tl.int8), mask=mask)
    tl.store(S + s_off, scale)
    tl.store(Z + s_off, zero)


@triton.jit
def _put_kernel(KN, VN, KQ, VQ, KS, KZ, VS, VZ, SLOT, slot, s_nb, s_nh, s_vb, s_vh,
                s_qb, s_qh, s_qn, s_wb, s_wh, s_wn, s_sb, s_sh, s_sn, HKV, d,
                BLOCK_D: tl.constexpr, PER_SEQ: tl.constexpr, MIN: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // HKV).to(tl.int64)
    h = (pid % HKV).to(tl.int64)
    if PER_SEQ:
        row = tl.load(SLOT + b).to(tl.int64)
    else:
        row = slot.to(tl.int64)
    col = tl.arange(0, BLOCK_D)
    mask = col < d
    s_off = b * s_sb + h * s_sh + row * s_sn
    _quantize_store(KN + b * s_nb + h * s_nh, KQ, KS, KZ, b * s_qb + h * s_qh + row * s_qn, s_off, col, mask, MIN)
    _quantize_store(VN + b * s_vb + h * s_vh, VQ, VS, VZ, b * s_wb + h * s_wh + row * s_wn, s_off, col, mask, MIN)


def _check(kq, vq, ks, kz, vs, vz, k_new, v_new):
    B, Hkv, S, d = kq.shape
    if vq.shape != kq.shape or kq.dtype != torch.int8 or vq.dtype != torch.int8:
        raise ValueError(f"kq, vq must be int8 [B,Hkv,S,d] alike; got {tuple(kq.shape)}, {tuple(vq.shape)}")
    if any(t.shape != (B, Hkv, S) or t.dtype != torch.float16 for t in (ks, kz, vs, vz)):
        raise ValueError(f"scales and zeros must be fp16 [{B},{Hkv},{S}]")
    if ks.stride() != kz.stride() or ks.stride() != vs.stride() or vs.stride() != vz.stride():
        raise ValueError("scales and zeros must share their strides")
    if k_new.shape != (B, Hkv, d) or v_new.shape != (B, Hkv, d):
        raise ValueError(f"k_new and v_new must be [{B},{Hkv},{d}], got {tuple(k_new.shape)}, {tuple(v_new.shape)}")
    if k_new.stride(-1) != 1 or v_new.stride(-1) != 1 or kq.stride(-1) != 1 or vq.stride(-1) != 1:
        raise ValueError("rows need a unit last stride")
    return B, Hkv, d


def put_rows_int8(kq, vq, ks, kz, vs, vz, slot, k_new, v_new):
    """In place: rows ``slot`` (int, or [B] int tensor) of the int8 cache = quantize(k_new, v_new)."""
    B, Hkv, d = _check(kq, vq, ks, kz, vs, vz, k_new, v_new)
    per_seq = not isinstance(slot, int)
    slots = slot.to(torch.int32) if per_seq else ks
    launcher(_put_kernel, kq)[(B * Hkv,)](
        k_new, v_new, kq, vq, ks, kz, vs, vz, slots, 0 if per_seq else int(slot),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
        kq.stride(0), kq.stride(1), kq.stride(2), vq.stride(0), vq.stride(1), vq.stride(2),
        ks.stride(0), ks.stride(1), ks.stride(2), Hkv, d,
        BLOCK_D=pow2_at_least(d), PER_SEQ=per_seq, MIN=MIN_SCALE, num_warps=1,
        **({} if interpreting() else {"num_stages": 1}))


def put_rows_int8_ref(kq, vq, ks, kz, vs, vz, slot, k_new, v_new):
    """Torch reference: quantize_kv, then write the rows."""
    B, Hkv, d = _check(kq, vq, ks, kz, vs, vz, k_new, v_new)
    rows = torch.full((B,), slot, device=kq.device) if isinstance(slot, int) else slot.long()
    b = torch.arange(B, device=kq.device)[:, None]
    h = torch.arange(Hkv, device=kq.device)[None, :]
    r = rows[:, None].expand(B, Hkv)
    for x, q, s, z in ((k_new, kq, ks, kz), (v_new, vq, vs, vz)):
        q[b, h, r], s[b, h, r], z[b, h, r] = quantize_kv(x)


__all__ = ["put_rows_int8", "put_rows_int8_ref"]
