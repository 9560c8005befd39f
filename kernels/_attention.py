"""The split-K decode-attention kernel over 16-bit K/V behind dense, windowed, gathered,
logit-writing, RoPE-on-load and position-masked attention (int8 K/V has its own kernel,
kernels/int8kv.py; both share the prologue and epilogue in _attention_parts.py and the combine).

Grid ``(splits, B·NH)``: a program takes one (sequence, head slot) and one split of that slot's
rows.
A head slot is a KV head whose ``G`` query heads share the rows (dense, windowed, shared gather
lists: ``HPP = G``) or one query head with its own row list (``HPP = 1``). The program's query rows
are padded to ``BLOCK_G >= 16`` so both products are ``tl.dot`` (tensor cores; decode is memory
bound, so the padded rows cost no time), and each K/V row is read from HBM once for the group.

Rows of a program: ``n`` logical rows split into ``splits`` chunks of ``ceil(n/splits)`` rounded
up to ``BLOCK_N``; logical row ``r`` maps to a cache row by MODE:
  DENSE  r                      (r < seq_len)
  WINDOW r if r < sink else r + seq_len - recent - sink   (all rows when the head is full)
  GATHER indices[b, slot, r]    (r < counts[b, slot])
Per block: read BLOCK_N·2·d·b bytes of K and V, FLOPs 4·BLOCK_G·BLOCK_N·d. Softmax in base 2
(scores pre-multiplied by scale·log2 e).
LOGITS (optional): the natural-log logits q·k·scale of every row, fp32, at [b, head, r] (r the
logical row): 4·G·n bytes more per (sequence, head slot), for methods that keep or rank the
attention weights (H2O, ALISA, TidalDecode); weights are exp(logit − lse).
ROPE (optional): K is cached before RoPE and rotated as it is loaded, to the position POS[row]
(int32, one per cache row, shared by sequences and heads), x·cos + rotate_half(x)·sin with cos
and sin read from [positions, d/2] tables (L2-resident: the positions of a window) — the rotated
keys are never written (StreamingLLM's re-rotation, arXiv 2309.17453 §3.2).
POS_MASK (optional): query row h sees key row j only if 0 ≤ KPOS[b, j] ≤ QPOS[b, h] (several
query tokens of one sequence in one program: ADORE's reconstruction chunk, arXiv 2407.02328).
Output: with one split, o (and lse) directly; else fp32 partials (acc, max, sum) per split that
:func:`_combine_kernel` merges: write G·splits·(d+2)·4 bytes, read them back, write o.
o and lse are allocated here (contiguous); q, K, V, indices may be strided views.
UPCAST (Triton's CPU interpreter only): its tl.dot and min/max mishandle bf16 and its fp32->bf16
cast truncates, so operands go to fp32 after the same roundings the GPU path does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._attention_parts import _LN2, _head_slot, _query, _rope_scores, _split_bounds, _store_result
from ._common import LOG2E, cast, interpreting, launch_options, launcher, pow2_at_least

DENSE, WINDOW, GATHER = 0, 1, 2  # MODE values for launchers
_WINDOW: tl.constexpr = tl.constexpr(WINDOW)  # the same, readable inside kernels
_GATHER: tl.constexpr = tl.constexpr(GATHER)


@triton.jit
def _attn_split_kernel(
        Q, K, V, SEQ, IDX, CNT, FULL, O, LSE, PART, LOGITS, POS, COS, SIN,
        QPOS, KPOS, s_lh, s_rope, s_qpb, s_kpb, qk_scale, sqb, sqh, skb, skh, skn, svb, svh, svn,
        sib, sih, sik, scb, sch, sink, recent, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, MODE: tl.constexpr, HAS_FULL: tl.constexpr,
        SINGLE: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_LOGITS: tl.constexpr,
        ROPE: tl.constexpr, POS_MASK: tl.constexpr, PAGE: tl.constexpr, UPCAST: tl.constexpr):
    pid_s = tl.program_id(0)
    b, slot, kvh, h0, b64, kvh64 = _head_slot(NH, G, HPP)

    shift = 0
    if MODE == _GATHER:
        n = tl.load(CNT + b * scb + slot * sch)
    elif MODE == _WINDOW:
        seq = tl.load(SEQ + b)
        full = sink + recent >= seq
        if HAS_FULL:
            full = full | (tl.load(FULL + kvh) != 0)
        n = tl.where(full, seq, sink + recent)
        shift = tl.where(full, 0, seq - recent - sink)
    else:
        n = tl.load(SEQ + b)
    start, end = _split_bounds(n, num_splits, pid_s, BLOCK_N)

    q, offs_g, offs_d, g_mask = _query(Q, b64, h0, sqb, sqh, HPP, BLOCK_G, D)
    k_base = K + b64 * skb + kvh64 * skh
    v_base = V + b64 * svb + kvh64 * svh

    q_dot = q
    if UPCAST:  # the interpreter's tl.dot mishandles bf16: same math in fp32
        q_dot = q_dot.to(tl.float32)
    if ROPE:
        offs_h = tl.arange(0, D // 2)
        q_half = Q + b64 * sqb + (h0 + offs_g)[:, None] * sqh + offs_h[None, :]
        q_lo = tl.load(q_half, mask=g_mask[:, None], other=0.0).to(q_dot.dtype)
        q_hi = tl.load(q_half + D // 2, mask=g_mask[:, None], other=0.0).to(q_dot.dtype)

    if POS_MASK:  # each query row sees the key rows whose position is in 0..its own
        q_pos = tl.load(QPOS + b64 * s_qpb + h0 + offs_g, mask=g_mask, other=-1)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    for off in range(start, end, BLOCK_N):
        r = off + tl.arange(0, BLOCK_N)
        r_mask = r < end
        if MODE == _GATHER:
            if PAGE > 1:  # the list holds pages of PAGE rows: list entry r // PAGE, row r % PAGE of it
                row = tl.load(IDX + b64 * sib + slot * sih + (r // PAGE) * sik, mask=r_mask, other=0) \
                    * PAGE + r % PAGE
            else:
                row = tl.load(IDX + b64 * sib + slot * sih + r * sik, mask=r_mask, other=0)
        elif MODE == _WINDOW:
            row = tl.where(r < sink, r, r + shift)
        else:
            row = r
        if not ROPE:
            k = tl.load(k_base + row[:, None] * skn + offs_d[None, :], mask=r_mask[:, None], other=0)
        if ROPE:
            s = _rope_scores(q_lo, q_hi, k_base + row[:, None] * skn + offs_h[None, :], row, r_mask,
                             POS, COS, SIN, s_rope, D // 2) * qk_scale
        else:
            if UPCAST:
                k = k.to(tl.float32)
            s = tl.dot(q_dot, tl.trans(k)) * qk_scale
        s = tl.where(r_mask[None, :], s, float("-inf"))
        if POS_MASK:
            k_pos = tl.load(KPOS + b64 * s_kpb + row, mask=r_mask, other=-1)
            s = tl.where((k_pos[None, :] >= 0) & (k_pos[None, :] <= q_pos[:, None]), s, float("-inf"))
        if WRITE_LOGITS:  # natural-log logits of this block, [b, head, r]
            tl.store(LOGITS + (b64 * H + h0 + offs_g)[:, None] * s_lh + r[None, :], s * _LN2,
                     mask=g_mask[:, None] & r_mask[None, :])
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if POS_MASK:  # a row that has seen nothing yet keeps max -inf: shift by 0 instead
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_use = m_new
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + row[:, None] * svn + offs_d[None, :], mask=r_mask[:, None], other=0)
        if UPCAST:  # p rounded to q's dtype as on the GPU (inline: helper calls are slow)
            if q.dtype == tl.bfloat16:
                bits = p.to(tl.uint32, bitcast=True)
                p = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32,
                                                                            bitcast=True)
            else:
                p = p.to(q.dtype).to(tl.float32)
            v = v.to(tl.float32)
        else:
            p = p.to(q.dtype)  # bf16/fp16 probabilities, as flash-attention does
        acc = acc * alpha[:, None] + tl.dot(p, v)
        m_i = m_new

    _store_result(acc, m_i, l_i, O, LSE, PART, b64, h0 + offs_g, g_mask, offs_d, pid_s, num_splits,
                  n_parts, H, D, SINGLE, WRITE_LSE, UPCAST)


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
        tl.store(LSE + pid, (m_run + tl.log2(l_safe)) * _LN2)


def outputs(q, splits: int, return_lse: bool):
    """o [B,H,d] in q's dtype, lse [B,H] fp32 (o itself when not wanted), and with several splits
    the fp32 partials (acc, max, sum) of every (sequence, query head, split) in one allocation."""
    B, H, d = q.shape
    o = torch.empty((B, H, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H), device=q.device, dtype=torch.float32) if return_lse else o
    n_parts = B * H * splits
    part = o if splits == 1 else torch.empty(n_parts * (d + 2), device=q.device, dtype=torch.float32)
    return o, lse, part, n_parts


def combine(q, o, lse, part, splits: int, n_parts: int, return_lse: bool) -> None:
    """Merge the splits' partials into o (and lse): nothing to do with one split."""
    if splits == 1:
        return
    B, H, d = q.shape
    cblocks, copts = launch_options("combine")
    cblocks["BLOCK_S"] = min(cblocks["BLOCK_S"], pow2_at_least(splits, 2))
    launcher(_combine_kernel, q)[(B * H,)](
        part, o, lse, splits, n_parts, D=d, WRITE_LSE=return_lse, UPCAST=interpreting(),
        **cblocks, **copts)


def run_attention(q, k, v, *, mode, scale, splits, prog_heads, hpp, seq_lens=None,
                  indices=None, counts=None, full=None, sink=0, recent=0,
                  return_lse=False, logits=None, rope=None, positions=None, page=1):
    """Launch the split kernel (+ combine when splits > 1). ``logits`` a [B, H, >= rows] fp32
    buffer (last dim contiguous) the kernel fills; ``rope`` = (positions [rows] int32, cos, sin
    [P, d/2] with unit last stride and a shared row stride); ``positions`` = (query positions
    [B, H] int32, key positions [B, rows] int32, −1 = empty): query row h sees key row j iff
    0 ≤ kpos[j] ≤ qpos[h] (ADORE's chunk attention); ``page`` > 1: ``indices`` list pages of that
    many rows (Quest), ``counts`` stay in rows.
    Returns o[B,H,d] in q's dtype, and lse[B,H] fp32 (natural log) when ``return_lse``."""
    B, H, d = q.shape
    G = H // k.shape[1]
    blocks, opts = launch_options("attention")
    o, lse, part, n_parts = outputs(q, splits, return_lse)
    idx = indices if indices is not None else q
    cnt = counts if counts is not None else q
    si = indices.stride() if indices is not None else (0, 0, 0)
    sc = counts.stride() if counts is not None else (0, 0)
    seq = seq_lens if seq_lens is not None else q
    fl = full if full is not None else q
    lg = logits if logits is not None else q
    pos, cos, sin = rope if rope is not None else (q, q, q)
    qpos, kpos = positions if positions is not None else (q, q)
    if rope is not None and (cos.stride(-1) != 1 or sin.stride(-1) != 1 or cos.stride(0) != sin.stride(0)):
        raise ValueError("rope cos/sin tables need a unit last stride and the same row stride")
    launcher(_attn_split_kernel, q)[(splits, B * prog_heads)](
        q, k, v, seq, idx, cnt, fl, o, lse, part, lg, pos, cos, sin, qpos, kpos,
        lg.stride(1) if logits is not None else 0, cos.stride(0) if rope is not None else 0,
        qpos.stride(0) if positions is not None else 0, kpos.stride(0) if positions is not None else 0,
        scale * LOG2E, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), *si, *sc,
        sink, recent, splits, n_parts, prog_heads, H,
        G=G, HPP=hpp, BLOCK_G=pow2_at_least(hpp, 16), D=d, MODE=mode,
        HAS_FULL=full is not None, SINGLE=splits == 1,
        WRITE_LSE=return_lse, WRITE_LOGITS=logits is not None, ROPE=rope is not None,
        POS_MASK=positions is not None, PAGE=page,
        UPCAST=interpreting(), **blocks, **opts)
    combine(q, o, lse, part, splits, n_parts, return_lse)
    return (o, lse) if return_lse else o


__all__ = ["run_attention", "outputs", "combine", "DENSE", "WINDOW", "GATHER"]
