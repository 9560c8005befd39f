"""One split-K decode-attention kernel behind decode, windowed, gathered and int8 attention.

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
Per block: read BLOCK_N·2·d·b bytes of K and V (+ BLOCK_N·4·2 for int8 scale and zero point),
FLOPs 4·BLOCK_G·BLOCK_N·d. Softmax in base 2 (scores pre-multiplied by scale·log2 e).
INT8: rows stay int8 up to the dots: int8 -> fp16 exactly (a bit trick, four values at a time),
fp16 dots with fp32 accumulation, q rounded to fp16; per-row scale s and zero z applied outside:
q·k_n = s_n·(q·kq_n − z_n·Σq), Σ_n p_n·s_n·(vq_n − z_n) = (p⊙s)·vq − Σ_n p_n·s_n·z_n.
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

from ._attention_parts import _i8_to_f16, _rope_scores
from ._common import LOG2E, cast, interpreting, launch_options, launcher, pow2_at_least

DENSE, WINDOW, GATHER = 0, 1, 2  # MODE values for launchers
_WINDOW: tl.constexpr = tl.constexpr(WINDOW)  # the same, readable inside kernels
_GATHER: tl.constexpr = tl.constexpr(GATHER)
_LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _attn_split_kernel(
        Q, K, V, KS, KZ, VS, VZ, SEQ, IDX, CNT, FULL, O, LSE, PART, LOGITS, POS, COS, SIN,
        QPOS, KPOS, s_lh, s_rope, s_qpb, s_kpb, qk_scale, sqb, sqh, skb, skh, skn, svb, svh, svn,
        sksb, sksh, sksn, svsb, svsh, svsn, sib, sih, sik, scb, sch,
        sink, recent, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, MODE: tl.constexpr, HAS_FULL: tl.constexpr, INT8: tl.constexpr,
        SINGLE: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_LOGITS: tl.constexpr,
        ROPE: tl.constexpr, POS_MASK: tl.constexpr, PAGE: tl.constexpr, UPCAST: tl.constexpr):
    pid_s = tl.program_id(0)
    pid = tl.program_id(1)
    b = pid // NH
    slot = pid % NH
    kvh = slot * HPP // G
    h0 = slot * HPP
    b64 = b.to(tl.int64)
    kvh64 = kvh.to(tl.int64)

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
    split_len = ((n + num_splits - 1) // num_splits + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    start = pid_s * split_len
    end = tl.minimum(start + split_len, n)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    g_mask = offs_g < HPP
    q = tl.load(Q + b64 * sqb + (h0 + offs_g)[:, None] * sqh + offs_d[None, :],
                mask=g_mask[:, None], other=0.0)
    k_base = K + b64 * skb + kvh64 * skh
    v_base = V + b64 * svb + kvh64 * svh

    if INT8:  # dots in fp16 on the raw int8 values; scale and zero point applied around them
        q_dot = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)
        q_sum = tl.sum(q_dot.to(tl.float32), 1)
    else:
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
        if INT8:  # q·k_n = scale_n·(q·kq_n − zero_n·Σq); int8 -> fp16 exactly by a bit trick
            ks = tl.load(KS + b64 * sksb + kvh64 * sksh + row * sksn, mask=r_mask, other=0.0)
            kz = tl.load(KZ + b64 * sksb + kvh64 * sksh + row * sksn, mask=r_mask, other=0.0)
            if UPCAST:
                k = ((k.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0).to(tl.float32)
            else:
                k = _i8_to_f16(k)
            s = tl.dot(q_dot, tl.trans(k))
            s = (s - q_sum[:, None] * kz.to(tl.float32)[None, :]) \
                * (ks.to(tl.float32) * qk_scale)[None, :]
        elif ROPE:
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
        if INT8:  # Σ p_n·scale_n·(vq_n − zero_n) = (p·scale)·vq − Σ p_n·scale_n·zero_n
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
        else:
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

    heads = h0 + offs_g
    if SINGLE:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(O + (b64 * H + heads)[:, None] * D + offs_d[None, :],
                 cast(out, O.dtype.element_ty, UPCAST), mask=g_mask[:, None])
        if WRITE_LSE:
            tl.store(LSE + b64 * H + heads, (m_i + tl.log2(l_safe)) * _LN2,
                     mask=g_mask)
    else:  # PART = [acc: n_parts·D | max: n_parts | sum: n_parts], part = (b, h, split)
        part = (b64 * H + heads) * num_splits + pid_s
        tl.store(PART + part[:, None] * D + offs_d[None, :], acc, mask=g_mask[:, None])
        tl.store(PART + n_parts * D + part, m_i, mask=g_mask)
        tl.store(PART + n_parts * (D + 1) + part, l_i, mask=g_mask)


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


def run_attention(q, k, v, *, mode, scale, splits, prog_heads, hpp, seq_lens=None,
                  indices=None, counts=None, full=None, sink=0, recent=0, int8=None,
                  return_lse=False, logits=None, rope=None, positions=None, page=1):
    """Launch the split kernel (+ combine when splits > 1). ``int8`` = (ks, kz, vs, vz) or None;
    ``logits`` a [B, H, >= rows] fp32 buffer (last dim contiguous) the kernel fills; ``rope`` =
    (positions [rows] int32, cos, sin [P, d/2] with unit last stride and a shared row stride);
    ``positions`` = (query positions [B, H] int32, key positions [B, rows] int32, −1 = empty):
    query row h sees key row j iff 0 ≤ kpos[j] ≤ qpos[h] (ADORE's chunk attention); ``page`` > 1:
    ``indices`` list pages of that many rows (Quest), ``counts`` stay in rows.
    Returns o[B,H,d] in q's dtype, and lse[B,H] fp32 (natural log) when ``return_lse``."""
    B, H, d = q.shape
    G = H // k.shape[1]
    kind = "attention_int8" if int8 is not None else "attention"
    blocks, opts = launch_options(kind)
    o = torch.empty((B, H, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H), device=q.device, dtype=torch.float32) if return_lse else o
    single = splits == 1
    n_parts = B * H * splits
    # fp32 partials (acc, max, sum) of every (sequence, query head, split), one allocation
    part = o if single else torch.empty(n_parts * (d + 2), device=q.device, dtype=torch.float32)
    ks, kz, vs, vz = int8 if int8 is not None else (q, q, q, q)
    sk_s = ks.stride() if int8 is not None else (0, 0, 0)
    sv_s = vs.stride() if int8 is not None else (0, 0, 0)
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
    grid = (splits, B * prog_heads)
    launcher(_attn_split_kernel, q)[grid](
        q, k, v, ks, kz, vs, vz, seq, idx, cnt, fl, o, lse, part, lg, pos, cos, sin, qpos, kpos,
        lg.stride(1) if logits is not None else 0, cos.stride(0) if rope is not None else 0,
        qpos.stride(0) if positions is not None else 0, kpos.stride(0) if positions is not None else 0,
        scale * LOG2E, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), *sk_s, *sv_s, *si, *sc,
        sink, recent, splits, n_parts, prog_heads, H,
        G=G, HPP=hpp, BLOCK_G=pow2_at_least(hpp, 16), D=d, MODE=mode,
        HAS_FULL=full is not None, INT8=int8 is not None, SINGLE=single,
        WRITE_LSE=return_lse, WRITE_LOGITS=logits is not None, ROPE=rope is not None,
        POS_MASK=positions is not None, PAGE=page,
        UPCAST=interpreting(), **blocks, **opts)
    if not single:
        cblocks, copts = launch_options("combine")
        cblocks["BLOCK_S"] = min(cblocks["BLOCK_S"], pow2_at_least(splits, 2))
        launcher(_combine_kernel, q)[(B * H,)](
            part, o, lse, splits, n_parts, D=d, WRITE_LSE=return_lse, UPCAST=interpreting(),
            **cblocks, **copts)
    return (o, lse) if return_lse else o


__all__ = ["run_attention", "DENSE", "WINDOW", "GATHER"]
