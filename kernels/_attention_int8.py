"""The split-K decode-attention kernel over an int8 K/V cache (kernels/int8kv.py's format: per
row an fp16 scale s and zero point z, x ≈ (xq − z)·s), dense rows only.

Grid, head slots, splits and output as in kernels/_attention.py (shared prologue and epilogue in
_attention_parts.py, the same combine). Rows stay int8 up to the dots: int8 -> fp16 exactly (a bit
trick, four values at a time), fp16 dots with fp32 accumulation, q rounded to fp16; the per-row
scale and zero are applied outside:
q·k_n = s_n·(q·kq_n − z_n·Σq), Σ_n p_n·s_n·(vq_n − z_n) = (p⊙s)·vq − Σ_n p_n·s_n·z_n.
Per block: read BLOCK_N·(2·d + 4·2) bytes (K and V, their scales and zero points),
FLOPs 4·BLOCK_G·BLOCK_N·d.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._attention import combine, outputs
from ._attention_parts import _head_slot, _i8_to_f16, _query, _split_bounds, _store_result
from ._common import LOG2E, interpreting, launch_options, launcher, pow2_at_least


@triton.jit
def _attn_int8_kernel(
        Q, K, V, KS, KZ, VS, VZ, SEQ, O, LSE, PART, qk_scale, sqb, sqh, skb, skh, skn, svb, svh, svn,
        sksb, sksh, sksn, svsb, svsh, svsn, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, SINGLE: tl.constexpr, WRITE_LSE: tl.constexpr, UPCAST: tl.constexpr):
    pid_s = tl.program_id(0)
    b, _slot, _kvh, h0, b64, kvh64 = _head_slot(NH, G, HPP)
    start, end = _split_bounds(tl.load(SEQ + b), num_splits, pid_s, BLOCK_N)

    q, offs_g, offs_d, g_mask = _query(Q, b64, h0, sqb, sqh, HPP, BLOCK_G, D)
    k_base = K + b64 * skb + kvh64 * skh
    v_base = V + b64 * svb + kvh64 * svh
    # dots in fp16 on the raw int8 values; scale and zero point applied around them
    q_dot = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)
    q_sum = tl.sum(q_dot.to(tl.float32), 1)
    if UPCAST:  # the interpreter's tl.dot mishandles 16-bit types: same math in fp32
        q_dot = q_dot.to(tl.float32)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    for off in range(start, end, BLOCK_N):
        row = off + tl.arange(0, BLOCK_N)
        r_mask = row < end
        k = tl.load(k_base + row[:, None] * skn + offs_d[None, :], mask=r_mask[:, None], other=0)
        # q·k_n = scale_n·(q·kq_n − zero_n·Σq); int8 -> fp16 exactly by a bit trick
        ks = tl.load(KS + b64 * sksb + kvh64 * sksh + row * sksn, mask=r_mask, other=0.0)
        kz = tl.load(KZ + b64 * sksb + kvh64 * sksh + row * sksn, mask=r_mask, other=0.0)
        if UPCAST:
            k = ((k.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0).to(tl.float32)
        else:
            k = _i8_to_f16(k)
        s = tl.dot(q_dot, tl.trans(k))
        s = (s - q_sum[:, None] * kz.to(tl.float32)[None, :]) * (ks.to(tl.float32) * qk_scale)[None, :]
        s = tl.where(r_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + row[:, None] * svn + offs_d[None, :], mask=r_mask[:, None], other=0)
        # Σ p_n·scale_n·(vq_n − zero_n) = (p·scale)·vq − Σ p_n·scale_n·zero_n
        vs = tl.load(VS + b64 * svsb + kvh64 * svsh + row * svsn, mask=r_mask, other=0.0)
        vz = tl.load(VZ + b64 * svsb + kvh64 * svsh + row * svsn, mask=r_mask, other=0.0)
        pv = (p * vs.to(tl.float32)[None, :]).to(tl.float16)
        if UPCAST:
            pv = pv.to(tl.float32)
            v = ((v.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0).to(tl.float32)
        else:
            v = _i8_to_f16(v)
        shift_v = tl.sum(pv.to(tl.float32) * vz.to(tl.float32)[None, :], 1)
        acc = acc * alpha[:, None] + tl.dot(pv, v) - shift_v[:, None]
        m_i = m_new

    _store_result(acc, m_i, l_i, O, LSE, PART, b64, h0 + offs_g, g_mask, offs_d, pid_s, num_splits,
                  n_parts, H, D, SINGLE, WRITE_LSE, UPCAST)


def run_attention_int8(q, kq, vq, ks, kz, vs, vz, seq_lens, *, scale, splits):
    """Launch the int8 kernel (+ combine when splits > 1) over one program per (sequence, KV
    head); scale and zero of K (and of V) share strides. Returns o[B,H,d] in q's dtype."""
    B, H, d = q.shape
    Hkv = kq.shape[1]
    G = H // Hkv
    blocks, opts = launch_options("attention_int8")
    o, lse, part, n_parts = outputs(q, splits, False)
    launcher(_attn_int8_kernel, q)[(splits, B * Hkv)](
        q, kq, vq, ks, kz, vs, vz, seq_lens, o, lse, part, scale * LOG2E, q.stride(0), q.stride(1),
        kq.stride(0), kq.stride(1), kq.stride(2), vq.stride(0), vq.stride(1), vq.stride(2),
        *ks.stride(), *vs.stride(), splits, n_parts, Hkv, H,
        G=G, HPP=G, BLOCK_G=pow2_at_least(G, 16), D=d, SINGLE=splits == 1, WRITE_LSE=False,
        UPCAST=interpreting(), **blocks, **opts)
    combine(q, o, lse, part, splits, n_parts, False)
    return o
