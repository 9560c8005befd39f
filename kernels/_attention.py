"""Split-K decode attention behind decode, windowed, gathered, int8, rope-on-load and
position-masked attention: :func:`run_attention` picks the kernel (kernels/_attention_kernels.py)
for the way rows are read and scored, and merges the splits with :func:`_combine_kernel`.

Rows of a program: ``n`` logical rows split into ``splits`` chunks of ``ceil(n/splits)`` rounded
up to ``BLOCK_N``; logical row ``r`` maps to a cache row by MODE (kernels/_attention_parts.py):
  DENSE  r                      (r < seq_len)
  WINDOW r if r < sink else r + seq_len - recent - sink   (all rows when the head is full)
  GATHER indices[b, slot, r]    (r < counts[b, slot]; with pages, row r % page of entry r // page)
Output: with one split, o (and lse) directly; else fp32 partials (acc, max, sum) per split that
:func:`_combine_kernel` merges: write G·splits·(d+2)·4 bytes, read them back, write o.
o and lse are allocated here (contiguous); q, K, V, indices may be strided views.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._attention_kernels import (_attn_int8_kernel, _attn_kernel, _attn_masked_kernel,
                                 _attn_rope_kernel)
from ._attention_parts import DENSE, GATHER, LN2, WINDOW
from ._common import LOG2E, cast, interpreting, launch_options, launcher, pow2_at_least


@triton.jit
def _combine_kernel(PART, O, LSE, num_splits, n_parts, D: tl.constexpr,
                    BLOCK_S: tl.constexpr, WRITE_LSE: tl.constexpr, UPCAST: tl.constexpr):
    """o = Σ_s acc_s·2^(m_s−M) / Σ_s l_s·2^(m_s−M); read splits·(d+2)·4 bytes, write d·b."""
    pid = tl.program_id(0)  # (sequence, query head)
    base = pid.to(tl.int64) * num_splits
    PM = PART + n_parts * D
    PL = PM + n_parts
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, D)
    m_run = float("-inf")
    l_run = 0.0
    acc = tl.zeros([D], tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        s_mask = s0 + offs_s < num_splits
        m = tl.load(PM + base + s0 + offs_s, mask=s_mask, other=float("-inf"))
        l = tl.load(PL + base + s0 + offs_s, mask=s_mask, other=0.0)
        po = tl.load(PART + (base + s0 + offs_s)[:, None] * D + offs_d[None, :],
                     mask=s_mask[:, None], other=0.0)
        m_new = tl.maximum(m_run, tl.max(m, 0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # all splits empty so far
        alpha = tl.exp2(m_run - m_ref)
        w = tl.exp2(m - m_ref)
        l_run = l_run * alpha + tl.sum(w * l, 0)
        acc = acc * alpha + tl.sum(w[:, None] * po, 0)
        m_run = m_new
    l_safe = tl.where(l_run > 0, l_run, 1.0)
    tl.store(O + pid.to(tl.int64) * D + offs_d, cast(acc / l_safe, O.dtype.element_ty, UPCAST))
    if WRITE_LSE:
        tl.store(LSE + pid, (m_run + tl.log2(l_safe)) * LN2)


def _launch(kernel, kind, grid, q, *args, **meta):
    blocks, opts = launch_options(kind)
    launcher(kernel, q)[grid](*args, **meta, **blocks, **opts)


def _gather_args(indices, counts, q):
    """(IDX, CNT, their 5 strides), placeholders without a row list."""
    if indices is None:
        return q, q, 0, 0, 0, 0, 0
    return indices, counts, *indices.stride(), *counts.stride()


def run_attention(q, k, v, *, mode, scale, splits, prog_heads, hpp, seq_lens=None,
                  indices=None, counts=None, full=None, sink=0, recent=0, int8=None,
                  return_lse=False, logits=None, rope=None, positions=None, page=1):
    """Launch the split kernel (+ combine when splits > 1). ``int8`` = (ks, kz, vs, vz) or None;
    ``logits`` a [B, H, >= rows] fp32 buffer (last dim contiguous) the kernel fills; ``rope`` =
    (positions [rows] int32, cos, sin [P, d/2] with unit last stride and a shared row stride);
    ``positions`` = (query positions [B, H] int32, key positions [B, rows] int32, −1 = empty):
    query row h sees key row j iff 0 ≤ kpos[j] ≤ qpos[h] (ADORE's chunk attention); ``page`` > 1:
    ``indices`` list pages of that many rows (Quest), ``counts`` stay in rows. ``rope`` and
    ``positions`` are dense attention without lse or logits; int8 rows are dense or gathered.
    Returns o[B,H,d] in q's dtype, and lse[B,H] fp32 (natural log) when ``return_lse``."""
    B, H, d = q.shape
    o = torch.empty((B, H, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H), device=q.device, dtype=torch.float32) if return_lse else o
    single = splits == 1
    n_parts = B * H * splits
    # fp32 partials (acc, max, sum) of every (sequence, query head, split), one allocation
    part = o if single else torch.empty(n_parts * (d + 2), device=q.device, dtype=torch.float32)
    grid = (splits, B * prog_heads)
    strides = (q.stride(0), q.stride(1), *k.stride()[:3], *v.stride()[:3])
    tail = (splits, n_parts, prog_heads, H)
    shape = dict(G=H // k.shape[1], HPP=hpp, BLOCK_G=pow2_at_least(hpp, 16), D=d, SINGLE=single,
                 UPCAST=interpreting())
    qk = scale * LOG2E
    lg, s_lh = (logits, logits.stride(1)) if logits is not None else (q, 0)
    seq = seq_lens if seq_lens is not None else q
    idx, cnt, *s_idx = _gather_args(indices, counts, q)
    if (rope is not None or positions is not None) and (mode != DENSE or int8 is not None
                                                        or return_lse or logits is not None):
        raise ValueError("rope-on-load and position-masked attention are dense, without int8, lse "
                         "or logits")
    if rope is not None:
        pos, cos, sin = rope
        if cos.stride(-1) != 1 or sin.stride(-1) != 1 or cos.stride(0) != sin.stride(0):
            raise ValueError("rope cos/sin tables need a unit last stride and the same row stride")
        _launch(_attn_rope_kernel, "attention", grid, q, q, k, v, seq_lens, o, part, pos, cos,
                sin, cos.stride(0), qk, *strides, *tail, **shape)
    elif positions is not None:
        qpos, kpos = positions
        _launch(_attn_masked_kernel, "attention", grid, q, q, k, v, seq_lens, o, part, qpos, kpos,
                qpos.stride(0), kpos.stride(0), qk, *strides, *tail, **shape)
    elif int8 is not None:
        if mode == WINDOW:
            raise ValueError("int8 attention reads dense or gathered rows, not a window")
        ks, kz, vs, vz = int8
        _launch(_attn_int8_kernel, "attention_int8", grid, q, q, k, v, ks, kz, vs, vz, seq, idx,
                cnt, o, lse, part, lg, s_lh, qk, *strides, *ks.stride(), *vs.stride(), *s_idx,
                *tail, MODE=mode, PAGE=page, WRITE_LSE=return_lse,
                WRITE_LOGITS=logits is not None, **shape)
    else:
        _launch(_attn_kernel, "attention", grid, q, q, k, v, seq, idx, cnt,
                full if full is not None else q, o, lse, part, lg, s_lh, qk, *strides, *s_idx,
                sink, recent, *tail, MODE=mode,
                HAS_FULL=full is not None, PAGE=page, WRITE_LSE=return_lse,
                WRITE_LOGITS=logits is not None, **shape)
    if not single:
        cblocks, copts = launch_options("combine")
        cblocks["BLOCK_S"] = min(cblocks["BLOCK_S"], pow2_at_least(splits, 2))
        launcher(_combine_kernel, q)[(B * H,)](
            part, o, lse, splits, n_parts, D=d, WRITE_LSE=return_lse, UPCAST=interpreting(),
            **cblocks, **copts)
    return (o, lse) if return_lse else o


__all__ = ["run_attention", "DENSE", "WINDOW", "GATHER"]
