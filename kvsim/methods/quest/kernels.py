"""Quest page scores (Tang et al., arXiv 2406.10774; mit-han-lab/Quest).

Each page of P tokens keeps the channel-wise min and max of its keys; the page's score is an upper
bound of q·k over its tokens: Σ_i max(q_i·kmax_i, q_i·kmin_i). With q⁺ = max(q, 0), q⁻ = min(q, 0)
that equals q⁺·max(kmax, kmin) + q⁻·min(kmax, kmin), two tensor-core dots. Grid (page blocks,
B·Hkv): one program scores BLOCK_P pages for the G query heads of a KV head.
Per (sequence, KV head): read 2·P_max'·d·b metadata (pages < n_pages only) + G·d·b, write G·P_max·4.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernels._common import interpreting, last_dim_contiguous, launch_options, launcher, pow2_at_least


@triton.jit
def _quest_kernel(Q, KMIN, KMAX, NP, S, sqb, sqh, snb, snh, snp, sxb, sxh, sxp, ssb, ssh,
                  P_max, Hkv, G: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_P: tl.constexpr,
                  D: tl.constexpr, UPCAST: tl.constexpr):
    pid_p = tl.program_id(0)
    pid = tl.program_id(1)
    b = pid // Hkv
    kvh = pid % Hkv
    b64 = b.to(tl.int64)
    kvh64 = kvh.to(tl.int64)
    n_pages = tl.load(NP + b)
    offs_g = tl.arange(0, BLOCK_G)
    g_mask = offs_g < G
    heads = kvh * G + offs_g
    offs_d = tl.arange(0, D)
    pages = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = pages < n_pages
    q = tl.load(Q + b64 * sqb + heads[:, None] * sqh + offs_d[None, :], mask=g_mask[:, None],
                other=0.0)
    kmin = tl.load(KMIN + b64 * snb + kvh64 * snh + pages[:, None] * snp + offs_d[None, :],
                   mask=p_mask[:, None], other=0.0)
    kmax = tl.load(KMAX + b64 * sxb + kvh64 * sxh + pages[:, None] * sxp + offs_d[None, :],
                   mask=p_mask[:, None], other=0.0)
    if UPCAST:  # the interpreter mishandles bf16 in tl.dot and min/max: same math in fp32
        q, kmin, kmax = q.to(tl.float32), kmin.to(tl.float32), kmax.to(tl.float32)
    hi = tl.maximum(kmax, kmin)
    lo = tl.minimum(kmax, kmin)
    zero = tl.zeros_like(q)
    q_pos = tl.maximum(q, zero)
    q_neg = tl.minimum(q, zero)
    s = tl.dot(q_pos, tl.trans(hi)) + tl.dot(q_neg, tl.trans(lo))
    s = tl.where(p_mask[None, :], s, float("-inf"))
    tl.store(S + b64 * ssb + heads[:, None] * ssh + pages[None, :], s,
             mask=g_mask[:, None] & (pages < P_max)[None, :])


def _check(q, kmin, kmax, n_pages):
    if q.dim() != 3 or kmin.dim() != 4 or kmax.shape != kmin.shape:
        raise ValueError(f"want q[B,H,d], kmin and kmax [B,Hkv,P_max,d]; got q{tuple(q.shape)}, "
                         f"kmin{tuple(kmin.shape)}, kmax{tuple(kmax.shape)}")
    B, H, d = q.shape
    Hkv, P_max = kmin.shape[1], kmin.shape[2]
    if kmin.shape[0] != B or kmin.shape[3] != d or H % Hkv or tuple(n_pages.shape) != (B,):
        raise ValueError(f"shapes disagree: q{tuple(q.shape)}, kmin{tuple(kmin.shape)}, "
                         f"n_pages{tuple(n_pages.shape)}")
    return B, H, Hkv, H // Hkv, d, P_max


def quest_page_scores(q, kmin, kmax, n_pages):
    """scores[B,H,P_max] fp32 = Σ_i max(q_i·kmax_i, q_i·kmin_i); −inf for pages ≥ n_pages[b]."""
    B, H, Hkv, G, d, P_max = _check(q, kmin, kmax, n_pages)
    q, kmin, kmax = (last_dim_contiguous(t) for t in (q, kmin, kmax))
    n_pages = n_pages.to(torch.int32)
    scores = torch.empty((B, H, P_max), device=q.device, dtype=torch.float32)
    blocks, opts = launch_options("quest")
    grid = (triton.cdiv(P_max, blocks["BLOCK_P"]), B * Hkv)
    launcher(_quest_kernel, q)[grid](
        q, kmin, kmax, n_pages, scores, q.stride(0), q.stride(1), *kmin.stride()[:3],
        *kmax.stride()[:3], scores.stride(0), scores.stride(1), P_max, Hkv, G=G,
        BLOCK_G=pow2_at_least(G, 16), D=d, UPCAST=interpreting(), **blocks, **opts)
    return scores


def quest_page_scores_ref(q, kmin, kmax, n_pages, *, compute_dtype=torch.float32):
    """Torch reference of :func:`quest_page_scores` (computed in ``compute_dtype``, fp32 out)."""
    B, H, Hkv, G, d, P_max = _check(q, kmin, kmax, n_pages)
    cd = compute_dtype
    scores = torch.empty(B, H, P_max, dtype=torch.float32, device=q.device)
    for b in range(B):  # [Hkv, G, P_max, d] products: one sequence at a time
        qg = q[b].to(cd).reshape(Hkv, G, 1, d)
        prod = torch.maximum(qg * kmax[b].to(cd)[:, None], qg * kmin[b].to(cd)[:, None])
        scores[b] = prod.sum(-1).float().reshape(H, P_max)
    valid = torch.arange(P_max, device=q.device)[None, :] < n_pages.to(q.device)[:, None]
    return scores.masked_fill(~valid[:, None, :], float("-inf"))
