"""SparQ Attention stages (Ribar et al., arXiv 2312.04985, Algorithm 1; graphcore-research code).

Step 1 (top-r of |q|, summed over the GQA group) and step 3 (top-k of ŝ) use torch.topk.
Step 2, :func:`sparq_approx_scores`: ŝ = softmax(q[i1]·K[:, i1]ᵀ / τ) over the valid positions,
with K stored d-major (``k_t[B, Hkv, d, S_max]``, "K stored twice") so the r rows i1 of k_t are
contiguous along S. Grid (splits, B·Hkv): one program serves the G query heads of a KV head over a
chunk of S. Per (sequence, KV head): read S·r·b (+ G·r·b of q), write G·S·4 logits and per-split
(max, sum); the normalising pass (one program per KV head and chunk) reads those, rewrites
G·S_max·4 probabilities (0 beyond seq_len) and writes their sum over the group, S_max·4, with
the ``local`` newest positions forced to +inf for the top-k (:func:`sparq_scores_and_group`).
Step 5 is :func:`kvsim.kernels.gather.gathered_decode_attention`; steps 1, 4 and 6 are in
kvsim/methods/sparq/kernels_steps.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernels._common import (LOG2E, interpreting, last_dim_contiguous, launch_options, launcher,
                      max_len, pow2_at_least, splits_for)

_LOG2E: tl.constexpr = tl.constexpr(LOG2E)


@triton.jit
def _sparq_logits_kernel(Q, KT, I1, SEQ, TAU, SH, PM, PL,
                         sqb, sqh, skb, skh, skd, sib, sih, stb, sth, ssb, ssh,
                         r, S_max, num_splits, Hkv, H,
                         G: tl.constexpr, BLOCK_G: tl.constexpr, R_PAD: tl.constexpr,
                         BLOCK_S: tl.constexpr, UPCAST: tl.constexpr):
    pid_s = tl.program_id(0)
    pid = tl.program_id(1)
    b = pid // Hkv
    kvh = pid % Hkv
    b64 = b.to(tl.int64)
    n = tl.load(SEQ + b)
    split_len = ((n + num_splits - 1) // num_splits + BLOCK_S - 1) // BLOCK_S * BLOCK_S
    start = pid_s * split_len
    end = tl.minimum(start + split_len, n)
    # loads run to a multiple of 8 positions (16-byte vectors, so the loop can be pipelined);
    # the extra columns (< S_max, beyond seq_len) are masked out of the scores below
    end_ld = tl.minimum((end + 7) // 8 * 8, S_max)

    offs_g = tl.arange(0, BLOCK_G)
    g_mask = offs_g < G
    heads = kvh * G + offs_g
    offs_r = tl.arange(0, R_PAD)
    r_mask = offs_r < r
    comp = tl.load(I1 + b64 * sib + kvh * sih + offs_r, mask=r_mask, other=0)
    qs = tl.load(Q + b64 * sqb + heads[:, None] * sqh + comp[None, :],
                 mask=g_mask[:, None] & r_mask[None, :], other=0.0)
    tau = tl.load(TAU + b64 * stb + heads * sth, mask=g_mask, other=1.0)
    c = _LOG2E / tau.to(tl.float32)  # base-2 softmax of logits / tau
    kt_rows = KT + b64 * skb + kvh.to(tl.int64) * skh + comp[:, None] * skd
    if UPCAST:  # the interpreter's tl.dot mishandles bf16: same math in fp32
        qs = qs.to(tl.float32)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    for off in range(start, end, BLOCK_S):
        cols = off + tl.arange(0, BLOCK_S)
        c_mask = cols < end
        kt = tl.load(kt_rows + cols[None, :], mask=r_mask[:, None] & (cols < end_ld)[None, :],
                     other=0.0)
        x = tl.dot(qs, kt.to(qs.dtype)) * c[:, None]
        x = tl.where(c_mask[None, :], x, float("-inf"))
        tl.store(SH + b64 * ssb + heads[:, None] * ssh + cols[None, :], x,
                 mask=g_mask[:, None] & c_mask[None, :])
        m_new = tl.maximum(m_i, tl.max(x, 1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(x - m_new[:, None]), 1)
        m_i = m_new
    part = (b64 * H + heads) * num_splits + pid_s
    tl.store(PM + part, m_i, mask=g_mask)
    tl.store(PL + part, l_i, mask=g_mask)


@triton.jit
def _sparq_norm_kernel(SH, PM, PL, SEQ, GRP, ssb, ssh, sgb, sgh, S_max, num_splits, H, Hkv, local,
                       G: tl.constexpr, BLOCK: tl.constexpr, BLOCK_SPLIT: tl.constexpr):
    """For the G heads of a KV head: ŝ = 2^(x − M)/L on [0, seq_len), 0 on [seq_len, S_max)
    (read/write G·BLOCK·4 bytes), and their sum over the group, +inf on the last ``local``
    positions (forced into the top-k) and −inf from seq_len on (never picked, so the top-k can
    take the whole contiguous row), write BLOCK·4."""
    pid_c = tl.program_id(0)
    pid = tl.program_id(1)
    b = pid // Hkv
    kvh = pid % Hkv
    n = tl.load(SEQ + b)
    cols = pid_c * BLOCK + tl.arange(0, BLOCK)
    valid = cols < n
    offs_s = tl.arange(0, BLOCK_SPLIT)
    group = tl.zeros([BLOCK], tl.float32)
    for g in range(G):
        h = kvh * G + g
        base = (b.to(tl.int64) * H + h) * num_splits
        m_run = float("-inf")
        l_run = 0.0
        for s0 in range(0, num_splits, BLOCK_SPLIT):
            s_mask = s0 + offs_s < num_splits
            m = tl.load(PM + base + s0 + offs_s, mask=s_mask, other=float("-inf"))
            l = tl.load(PL + base + s0 + offs_s, mask=s_mask, other=0.0)
            m_new = tl.maximum(m_run, tl.max(m, 0))
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_run = l_run * tl.exp2(m_run - m_ref) + tl.sum(l * tl.exp2(m - m_ref), 0)
            m_run = m_new
        inv = tl.where(l_run > 0, 1.0 / l_run, 0.0)
        ptr = SH + b.to(tl.int64) * ssb + h * ssh + cols
        x = tl.load(ptr, mask=valid, other=float("-inf"))
        p = tl.where(valid, tl.exp2(x - m_run) * inv, 0.0)
        tl.store(ptr, p, mask=cols < S_max)
        group += p
    group = tl.where(valid & (cols >= n - local), float("inf"), group)
    group = tl.where(valid, group, float("-inf"))
    tl.store(GRP + b.to(tl.int64) * sgb + kvh * sgh + cols, group, mask=cols < S_max)


def _check_scores(q, k_t, i1, seq_lens, tau):
    if q.dim() != 3 or k_t.dim() != 4 or i1.dim() != 3:
        raise ValueError(f"want q[B,H,d], k_t[B,Hkv,d,S_max], i1[B,Hkv,r]; got q{tuple(q.shape)}, "
                         f"k_t{tuple(k_t.shape)}, i1{tuple(i1.shape)}")
    B, H, d = q.shape
    Hkv = k_t.shape[1]
    if k_t.shape[:3] != (B, Hkv, d) or H % Hkv or i1.shape[:2] != (B, Hkv):
        raise ValueError(f"shapes disagree: q{tuple(q.shape)}, k_t{tuple(k_t.shape)} (d-major), "
                         f"i1{tuple(i1.shape)}")
    if tuple(tau.shape) != (B, H) or tuple(seq_lens.shape) != (B,):
        raise ValueError(f"want tau[{B},{H}] and seq_lens[{B}]; got tau{tuple(tau.shape)}, "
                         f"seq_lens{tuple(seq_lens.shape)}")
    return B, H, Hkv, H // Hkv, d, i1.shape[2], k_t.shape[3]


def sparq_approx_scores(q, k_t, i1, seq_lens, tau, *, num_splits=None):
    """s_hat[B,H,S_max] fp32: softmax over positions < seq_len of q[i1]·K[:, i1]ᵀ / tau, 0 beyond.

    q[B,H,d]; k_t[B,Hkv,d,S_max] (d-major K); i1[B,Hkv,r] int32 components shared by a KV head's
    query heads; seq_lens[B] int32; tau[B,H] fp32."""
    return sparq_scores_and_group(q, k_t, i1, seq_lens, tau, num_splits=num_splits)[0]


def sparq_scores_and_group(q, k_t, i1, seq_lens, tau, *, local=0, num_splits=None):
    """(s_hat [B,H,S_max], group [B,Hkv,S_max]) fp32: :func:`sparq_approx_scores` and, from the
    same normalising pass, ŝ summed over each KV head's G query heads with the last ``local``
    positions set to +inf (SparQ's top-k input, Alg. 1 step 3); s_hat 0 and group −inf beyond
    seq_len. k_t's S_max a multiple of 8 keeps its rows 16-byte aligned (vector loads)."""
    B, H, Hkv, G, d, r, S_max = _check_scores(q, k_t, i1, seq_lens, tau)
    k_t = last_dim_contiguous(k_t)
    seq_lens = seq_lens.to(torch.int32)
    i1 = i1.to(torch.int32)
    tau = tau.to(torch.float32)
    rows = max_len(seq_lens) if num_splits is None else 0
    splits = splits_for(B, Hkv, rows, num_splits)
    s_hat = torch.empty((B, H, S_max), device=q.device, dtype=torch.float32)
    group = torch.empty((B, Hkv, S_max), device=q.device, dtype=torch.float32)
    pm = torch.empty((B, H, splits), device=q.device, dtype=torch.float32)
    pl = torch.empty_like(pm)
    blocks, opts = launch_options("sparq_logits")
    launcher(_sparq_logits_kernel, q)[(splits, B * Hkv)](
        q, k_t, i1, seq_lens, tau, s_hat, pm, pl, q.stride(0), q.stride(1), k_t.stride(0),
        k_t.stride(1), k_t.stride(2), i1.stride(0), i1.stride(1), tau.stride(0), tau.stride(1),
        s_hat.stride(0), s_hat.stride(1), r, S_max, splits, Hkv, H, G=G,
        BLOCK_G=pow2_at_least(G, 16),
        R_PAD=pow2_at_least(r, 16), UPCAST=interpreting(), **blocks, **opts)
    blocks, opts = launch_options("sparq_norm")
    grid = (triton.cdiv(S_max, blocks["BLOCK"]), B * Hkv)
    launcher(_sparq_norm_kernel, q)[grid](
        s_hat, pm, pl, seq_lens, group, s_hat.stride(0), s_hat.stride(1), group.stride(0),
        group.stride(1), S_max, splits, H, Hkv, int(local), G=G,
        BLOCK_SPLIT=min(16, pow2_at_least(splits, 2)), **blocks, **opts)
    return s_hat, group


def sparq_approx_scores_ref(q, k_t, i1, seq_lens, tau, *, num_splits=None,
                            compute_dtype=torch.float32):
    """Torch reference of :func:`sparq_approx_scores` (computed in ``compute_dtype``, fp32 out)."""
    B, H, Hkv, G, d, r, S_max = _check_scores(q, k_t, i1, seq_lens, tau)
    cd = compute_dtype
    out = torch.zeros(B, H, S_max, dtype=torch.float32, device=q.device)
    for b, n in enumerate(seq_lens.tolist()):
        for h in range(Hkv):
            comp = i1[b, h].long()
            heads = slice(h * G, (h + 1) * G)
            logits = q[b, heads][:, comp].to(cd) @ k_t[b, h, comp, :n].to(cd)
            logits = logits / tau[b, heads, None].to(cd)
            out[b, heads, :n] = torch.softmax(logits, dim=-1).float()
    return out


def sparq_scores_and_group_ref(q, k_t, i1, seq_lens, tau, *, local=0, num_splits=None):
    """Torch reference of :func:`sparq_scores_and_group`."""
    s_hat = sparq_approx_scores_ref(q, k_t, i1, seq_lens, tau)
    B, H, S_max = s_hat.shape
    Hkv = k_t.shape[1]
    group = s_hat.reshape(B, Hkv, H // Hkv, S_max).sum(2)
    pos = torch.arange(S_max, device=q.device)
    n = seq_lens.long()[:, None, None]
    group = group.masked_fill((pos >= n - int(local)) & (pos < n), float("inf"))
    return s_hat, group.masked_fill(pos >= n, float("-inf"))
