"""The split-K decode-attention kernels, one per way of reading and scoring rows (helpers in
kernels/_attention_parts.py, launcher and split-K combine in kernels/_attention.py).

  _attn_kernel         bf16/fp16/fp32 rows: dense, windowed or gathered (pages too), lse, logits
  _attn_int8_kernel    int8 rows with a per-row scale and zero point: dense or gathered, logits
  _attn_rope_kernel    dense rows cached before RoPE, rotated as they load (StreamingLLM)
  _attn_masked_kernel  dense rows seen by several query positions each (ADORE's chunk)

Grid ``(splits, B·NH)``: a program takes one (sequence, head slot) and one split of that slot's
rows. A head slot is a KV head whose ``G`` query heads share the rows (``HPP = G``) or one query
head with its own row list (``HPP = 1``). Query rows are padded to ``BLOCK_G >= 16`` so both
products are ``tl.dot`` (decode is memory bound: the padded rows cost no time), and each K/V row
is read from HBM once for the group. Per block: read BLOCK_N·2·d·b bytes of K and V, FLOPs
4·BLOCK_G·BLOCK_N·d. Softmax in base 2 (qk_scale = scale·log2 e).
UPCAST (Triton's CPU interpreter only): its tl.dot and min/max mishandle bf16 and its fp32->bf16
cast truncates, so operands go to fp32 after the same roundings the GPU path does.
"""
import triton
import triton.language as tl

from ._attention_parts import (cache_rows, float_pv, float_scores, head_rows, i8_operand, load_q,
                               program_slot, rope_scores, row_count, softmax_start, softmax_step,
                               split_bounds, store_logits, store_result)


@triton.jit
def _attn_kernel(
        Q, K, V, SEQ, IDX, CNT, FULL, O, LSE, PART, LOGITS, s_lh, qk_scale,
        sqb, sqh, skb, skh, skn, svb, svh, svn, sib, sih, sik, scb, sch,
        sink, recent, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, MODE: tl.constexpr, HAS_FULL: tl.constexpr, PAGE: tl.constexpr,
        SINGLE: tl.constexpr, WRITE_LSE: tl.constexpr, WRITE_LOGITS: tl.constexpr,
        UPCAST: tl.constexpr):
    """Attention over the rows MODE maps (parts.row_count, parts.cache_rows); LOGITS: the
    natural-log logits of every row at [b, head, r] (4·G·n bytes more, for H2O, ALISA and
    TidalDecode, which keep or rank by attention weights exp(logit − lse))."""
    b, b64, slot, kvh64, h0 = program_slot(NH, G, HPP)
    n, shift = row_count(SEQ, CNT, FULL, b, slot, kvh64, scb, sch, sink, recent, MODE, HAS_FULL)
    start, end = split_bounds(n, num_splits, BLOCK_N)
    q, offs_g, offs_d, g_mask = load_q(Q, b64, h0, sqb, sqh, HPP, BLOCK_G, D)
    q_dot = q
    if UPCAST:
        q_dot = q.to(tl.float32)
    k_base, v_base = head_rows(K, V, b64, kvh64, skb, skh, svb, svh)
    heads = h0 + offs_g
    m_i, l_i, acc = softmax_start(BLOCK_G, D)
    for off in range(start, end, BLOCK_N):
        r = off + tl.arange(0, BLOCK_N)
        r_mask = r < end
        row = cache_rows(r, r_mask, IDX, b64, slot, sib, sih, sik, shift, sink, MODE, PAGE)
        s = float_scores(q_dot, k_base + row[:, None] * skn + offs_d[None, :], r_mask, qk_scale,
                         UPCAST)
        s = tl.where(r_mask[None, :], s, float("-inf"))
        if WRITE_LOGITS:
            store_logits(LOGITS, s, b64, H, h0, offs_g, s_lh, r, g_mask, r_mask)
        m_i, alpha, p, l_i = softmax_step(s, m_i, l_i, False)
        acc = float_pv(acc, alpha, p, v_base + row[:, None] * svn + offs_d[None, :], r_mask,
                       Q.dtype.element_ty, UPCAST)
    store_result(O, LSE, PART, acc, m_i, l_i, b64, heads, offs_d, g_mask, H, num_splits, n_parts,
                 D, SINGLE, WRITE_LSE, UPCAST)


@triton.jit
def _attn_int8_kernel(
        Q, K, V, KS, KZ, VS, VZ, SEQ, IDX, CNT, O, LSE, PART, LOGITS, s_lh, qk_scale,
        sqb, sqh, skb, skh, skn, svb, svh, svn, sksb, sksh, sksn, svsb, svsh, svsn,
        sib, sih, sik, scb, sch, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, MODE: tl.constexpr, PAGE: tl.constexpr, SINGLE: tl.constexpr,
        WRITE_LSE: tl.constexpr, WRITE_LOGITS: tl.constexpr, UPCAST: tl.constexpr):
    """Dense or gathered attention over int8 rows (kernels/int8kv.py's format), read in place:
    + BLOCK_N·4·2 bytes of fp16 scale s and zero point z per block. Rows stay int8 up to fp16
    dots (exact), q rounded to fp16; s and z applied outside the dots:
    q·k_n = s_n·(q·kq_n − z_n·Σq),  Σ_n p_n·s_n·(vq_n − z_n) = (p⊙s)·vq − Σ_n p_n·s_n·z_n."""
    b, b64, slot, kvh64, h0 = program_slot(NH, G, HPP)
    n, _ = row_count(SEQ, CNT, SEQ, b, slot, kvh64, scb, sch, 0, 0, MODE, False)
    start, end = split_bounds(n, num_splits, BLOCK_N)
    q, offs_g, offs_d, g_mask = load_q(Q, b64, h0, sqb, sqh, HPP, BLOCK_G, D)
    q_dot = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)
    q_sum = tl.sum(q_dot.to(tl.float32), 1)
    if UPCAST:
        q_dot = q_dot.to(tl.float32)
    k_base, v_base = head_rows(K, V, b64, kvh64, skb, skh, svb, svh)
    ks_off = b64 * sksb + kvh64 * sksh  # scale and zero point share strides
    vs_off = b64 * svsb + kvh64 * svsh
    heads = h0 + offs_g
    m_i, l_i, acc = softmax_start(BLOCK_G, D)
    for off in range(start, end, BLOCK_N):
        r = off + tl.arange(0, BLOCK_N)
        r_mask = r < end
        row = cache_rows(r, r_mask, IDX, b64, slot, sib, sih, sik, 0, 0, MODE, PAGE)
        k = tl.load(k_base + row[:, None] * skn + offs_d[None, :], mask=r_mask[:, None], other=0)
        ks = tl.load(KS + ks_off + row * sksn, mask=r_mask, other=0.0)
        kz = tl.load(KZ + ks_off + row * sksn, mask=r_mask, other=0.0)
        s = tl.dot(q_dot, tl.trans(i8_operand(k, UPCAST)))
        s = (s - q_sum[:, None] * kz.to(tl.float32)[None, :]) \
            * (ks.to(tl.float32) * qk_scale)[None, :]
        s = tl.where(r_mask[None, :], s, float("-inf"))
        if WRITE_LOGITS:
            store_logits(LOGITS, s, b64, H, h0, offs_g, s_lh, r, g_mask, r_mask)
        m_i, alpha, p, l_i = softmax_step(s, m_i, l_i, False)
        v = tl.load(v_base + row[:, None] * svn + offs_d[None, :], mask=r_mask[:, None], other=0)
        vs = tl.load(VS + vs_off + row * svsn, mask=r_mask, other=0.0)
        vz = tl.load(VZ + vs_off + row * svsn, mask=r_mask, other=0.0)
        pv = (p * vs.to(tl.float32)[None, :]).to(tl.float16)
        if UPCAST:
            pv = pv.to(tl.float32)
        shift_v = tl.sum(pv.to(tl.float32) * vz.to(tl.float32)[None, :], 1)
        acc = acc * alpha[:, None] + tl.dot(pv, i8_operand(v, UPCAST)) - shift_v[:, None]
    store_result(O, LSE, PART, acc, m_i, l_i, b64, heads, offs_d, g_mask, H, num_splits, n_parts,
                 D, SINGLE, WRITE_LSE, UPCAST)


@triton.jit
def _attn_rope_kernel(
        Q, K, V, SEQ, O, PART, POS, COS, SIN, s_rope, qk_scale,
        sqb, sqh, skb, skh, skn, svb, svh, svn, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, SINGLE: tl.constexpr, UPCAST: tl.constexpr):
    """Dense attention over keys cached before RoPE, each rotated as it loads to the position
    POS[row] (int32, one per cache row, shared by sequences and heads): x·cos + rotate_half(x)·sin
    with cos and sin from [positions, d/2] tables (L2-resident: a window's positions). The rotated
    keys are never written (StreamingLLM's re-rotation, arXiv 2309.17453 §3.2)."""
    b, b64, slot, kvh64, h0 = program_slot(NH, G, HPP)
    start, end = split_bounds(tl.load(SEQ + b), num_splits, BLOCK_N)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    offs_h = tl.arange(0, D // 2)
    g_mask = offs_g < HPP
    q_half = Q + b64 * sqb + (h0 + offs_g)[:, None] * sqh + offs_h[None, :]
    q_lo = tl.load(q_half, mask=g_mask[:, None], other=0.0)
    q_hi = tl.load(q_half + D // 2, mask=g_mask[:, None], other=0.0)
    if UPCAST:
        q_lo = q_lo.to(tl.float32)
        q_hi = q_hi.to(tl.float32)
    k_base, v_base = head_rows(K, V, b64, kvh64, skb, skh, svb, svh)
    m_i, l_i, acc = softmax_start(BLOCK_G, D)
    for row0 in range(start, end, BLOCK_N):
        row = row0 + tl.arange(0, BLOCK_N)
        r_mask = row < end
        s = rope_scores(q_lo, q_hi, k_base + row[:, None] * skn + offs_h[None, :], row, r_mask,
                        POS, COS, SIN, s_rope, D // 2) * qk_scale
        s = tl.where(r_mask[None, :], s, float("-inf"))
        m_i, alpha, p, l_i = softmax_step(s, m_i, l_i, False)
        acc = float_pv(acc, alpha, p, v_base + row[:, None] * svn + offs_d[None, :], r_mask,
                       Q.dtype.element_ty, UPCAST)
    store_result(O, O, PART, acc, m_i, l_i, b64, h0 + offs_g, offs_d, g_mask, H, num_splits,
                 n_parts, D, SINGLE, False, UPCAST)


@triton.jit
def _attn_masked_kernel(
        Q, K, V, SEQ, O, PART, QPOS, KPOS, s_qpb, s_kpb, qk_scale,
        sqb, sqh, skb, skh, skn, svb, svh, svn, num_splits, n_parts, NH, H,
        G: tl.constexpr, HPP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, SINGLE: tl.constexpr, UPCAST: tl.constexpr):
    """Dense attention of several query tokens of one sequence in one program: query row h sees
    cache row j only if 0 ≤ KPOS[b, j] ≤ QPOS[b, h] (ADORE's reconstruction chunk, arXiv
    2407.02328). A query row may see no row of a block (or of its whole split)."""
    b, b64, slot, kvh64, h0 = program_slot(NH, G, HPP)
    start, end = split_bounds(tl.load(SEQ + b), num_splits, BLOCK_N)
    q, offs_g, offs_d, g_mask = load_q(Q, b64, h0, sqb, sqh, HPP, BLOCK_G, D)
    q_dot = q
    if UPCAST:
        q_dot = q.to(tl.float32)
    q_pos = tl.load(QPOS + b64 * s_qpb + h0 + offs_g, mask=g_mask, other=-1)
    k_base, v_base = head_rows(K, V, b64, kvh64, skb, skh, svb, svh)
    m_i, l_i, acc = softmax_start(BLOCK_G, D)
    for row0 in range(start, end, BLOCK_N):
        row = row0 + tl.arange(0, BLOCK_N)
        r_mask = row < end
        s = float_scores(q_dot, k_base + row[:, None] * skn + offs_d[None, :], r_mask, qk_scale,
                         UPCAST)
        k_pos = tl.load(KPOS + b64 * s_kpb + row, mask=r_mask, other=-1)
        seen = r_mask[None, :] & (k_pos[None, :] >= 0) & (k_pos[None, :] <= q_pos[:, None])
        s = tl.where(seen, s, float("-inf"))
        m_i, alpha, p, l_i = softmax_step(s, m_i, l_i, True)
        acc = float_pv(acc, alpha, p, v_base + row[:, None] * svn + offs_d[None, :], r_mask,
                       Q.dtype.element_ty, UPCAST)
    store_result(O, O, PART, acc, m_i, l_i, b64, h0 + offs_g, offs_d, g_mask, H, num_splits,
                 n_parts, D, SINGLE, False, UPCAST)
