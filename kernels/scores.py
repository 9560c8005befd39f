"""Decode attention that also gives its logits, and the accumulation of attention weights.

Methods that rank or keep tokens by their attention weights get them from the attention kernel
itself, not from a second, eager attention: H2O (accumulated weights per KV head, arXiv
2306.14048 §4), ALISA (accumulated weights summed over all heads, arXiv 2403.17312 §4.2) and
TidalDecode (top-k of each query head's logits, arXiv 2410.05076 §3).

``decode_attention_with_logits``: the split-K kernel (kernels/_attention.py) over contiguous rows
[0, seq_len) or gathered rows, writing the fp32 natural-log logits [B, H, N]: per (sequence,
query head) N·4 bytes more than attention. Weights are exp(logit − lse).
``accumulate_weights``: acc[b, set, r] += Σ_{h in set} exp(logits[b,h,r] − lse[b,h]) for r < counts[b]
(sets of ``heads_per_set`` consecutive query heads), or acc[b, indices[b, r]] += Σ over all heads
when ``indices`` is given: read H·N·4 (+ N·4 indices), read and write N·4 of acc per sequence.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS

from ._attention import DENSE, GATHER, run_attention
from ._common import (check_decode_args, default_scale, interpreting, last_dim_contiguous, launcher,
                      splits_for)

BLOCK_ROWS = 512  # rows per accumulate program at most (an elementwise pass: any size that fills the GPU)
TILE_ELEMENTS = 4096  # logits one accumulate program loads at once (heads x rows; 32 fp32 a thread)


def decode_attention_with_logits(q, k, v, seq_lens=None, indices=None, counts=None, *, scale=None,
                                 num_splits=None):
    """(o [B,H,d], lse [B,H] fp32, logits [B,H,N] fp32) of attention over rows [0, seq_lens[b])
    (N = k.shape[2]) or over indices[b, hs, :counts[b, hs]] (N = indices.shape[2], Hsel = Hkv
    or H, as kernels.gather). Logits past a row count are left unwritten."""
    B, H, Hkv, G, d = check_decode_args(q, k, v)
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    scale = default_scale(d, scale)
    if indices is None:
        n = k.shape[2]
        logits = torch.empty(B, H, n, device=q.device, dtype=torch.float32)
        splits = splits_for(B, Hkv, n, num_splits, target=DENSE_TARGET_PROGRAMS)
        o, lse = run_attention(q, k, v, mode=DENSE, scale=scale, splits=splits, prog_heads=Hkv,
                               hpp=G, seq_lens=seq_lens.to(torch.int32), return_lse=True,
                               logits=logits)
        return o, lse, logits
    Hsel, n = indices.shape[1], indices.shape[2]
    logits = torch.empty(B, H, n, device=q.device, dtype=torch.float32)
    splits = splits_for(B, Hsel, n, num_splits)
    o, lse = run_attention(q, k, v, mode=GATHER, scale=scale, splits=splits, prog_heads=Hsel,
                           hpp=G if Hsel == Hkv else 1, indices=indices.to(torch.int32),
                           counts=counts.to(torch.int32), return_lse=True, logits=logits)
    return o, lse, logits


def decode_attention_with_logits_ref(q, k, v, seq_lens=None, indices=None, counts=None, *,
                                     scale=None, num_splits=None, out_dtype=None):
    """fp32 torch reference of :func:`decode_attention_with_logits` (unwritten logits: -inf;
    o in ``out_dtype``, default q's)."""
    B, H, Hkv, G, d = check_decode_args(q, k, v)
    scale = default_scale(d, scale)
    if indices is None:
        n = k.shape[2]
        rows = torch.arange(n, device=q.device).expand(B, H, n)
        valid = rows < seq_lens.long()[:, None, None]
    else:
        Hsel, n = indices.shape[1], indices.shape[2]
        rows = indices.long().repeat_interleave(H // Hsel, dim=1).clamp(0, k.shape[2] - 1)
        valid = torch.arange(n, device=q.device) < counts.long().repeat_interleave(H // Hsel, 1)[..., None]
    kvh = torch.arange(H, device=q.device) // G
    kr = k.float()[torch.arange(B)[:, None, None], kvh[None, :, None], rows]  # [B,H,n,d]
    vr = v.float()[torch.arange(B)[:, None, None], kvh[None, :, None], rows]
    kr, vr = kr.masked_fill(~valid[..., None], 0.0), vr.masked_fill(~valid[..., None], 0.0)
    logits = (kr @ q.float()[..., None])[..., 0] * scale
    logits = logits.masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(logits, -1)
    p = torch.softmax(logits, -1).nan_to_num(0.0)
    o = (p[:, :, None, :] @ vr)[:, :, 0]
    return o.to(out_dtype or q.dtype), lse, logits


@triton.jit
def _accumulate_kernel(LOGITS, LSE, ACC, IDX, CNT, s_lb, s_lh, s_ab, s_as, s_ib, H, HS, n_sets,
                       BLOCK: tl.constexpr, HB: tl.constexpr, INDEXED: tl.constexpr):
    pid_r = tl.program_id(0)
    pid = tl.program_id(1)
    b = (pid // n_sets).to(tl.int64)
    st = pid % n_sets
    r = pid_r * BLOCK + tl.arange(0, BLOCK)
    mask = r < tl.load(CNT + b)
    j = tl.arange(0, HB)  # the set's heads in one tile: no chain of HS dependent loads
    h = st * HS + j
    in_set = j < HS
    lse = tl.load(LSE + b * H + h, mask=in_set, other=0.0)
    lg = tl.load(LOGITS + b * s_lb + h[:, None] * s_lh + r[None, :], mask=in_set[:, None] & mask[None, :],
                 other=float("-inf"))
    total = tl.sum(tl.exp(lg - lse[:, None]), 0)
    if INDEXED:
        dst = tl.load(IDX + b * s_ib + r, mask=mask, other=0).to(tl.int64)
    else:
        dst = r.to(tl.int64)
    ptr = ACC + b * s_ab + st * s_as + dst
    tl.store(ptr, tl.load(ptr, mask=mask, other=0.0) + total, mask=mask)


def accumulate_block(heads_per_set: int) -> tuple[int, int]:
    """(rows per program, heads tile) of the accumulate pass: a program loads its set's heads as
    one [HB, rows] tile of TILE_ELEMENTS at most (ALISA's 32 heads: 128 rows; H2O's G ≤ 8: 512;
    a tile of at least 2 heads, the second masked under MHA)."""
    hb = triton.next_power_of_2(max(heads_per_set, 2))
    return max(32, min(BLOCK_ROWS, TILE_ELEMENTS // hb)), hb


def _check_acc(logits, lse, acc, counts, heads_per_set, indices):
    B, H, n = logits.shape
    if lse.shape != (B, H) or counts.shape != (B,) or H % heads_per_set:
        raise ValueError(f"want lse [{B},{H}], counts [{B}] and heads_per_set dividing {H}; got "
                         f"{tuple(lse.shape)}, {tuple(counts.shape)}, {heads_per_set}")
    if indices is not None and (heads_per_set != H or acc.dim() != 2 or indices.shape != (B, n)):
        raise ValueError("indexed accumulation sums all heads into acc [B, S] at indices [B, N]")
    if indices is None and (acc.dim() != 3 or acc.shape[:2] != (B, H // heads_per_set)
                            or acc.shape[2] < n):
        raise ValueError(f"acc must be [{B}, {H // heads_per_set}, >= {n}], got {tuple(acc.shape)}")


def accumulate_weights(logits, lse, acc, counts, heads_per_set, indices=None):
    """In place: acc += attention weights summed over each set of ``heads_per_set`` query heads
    (module doc). logits [B,H,N] fp32, lse [B,H], counts [B] int32 rows valid, acc fp32 with a unit
    last stride; indices [B,N] (no duplicates in a row's valid prefix) or None."""
    _check_acc(logits, lse, acc, counts, heads_per_set, indices)
    B, H, n = logits.shape
    n_sets = H // heads_per_set
    s_as = acc.stride(1) if indices is None else 0
    idx = indices.to(torch.int32) if indices is not None else counts
    block, hb = accumulate_block(heads_per_set)
    grid = (triton.cdiv(max(n, 1), block), B * n_sets)
    launcher(_accumulate_kernel, logits)[grid](
        logits, lse.contiguous(), acc, idx, counts.to(torch.int32), logits.stride(0),
        logits.stride(1), acc.stride(0), s_as, idx.stride(0), H, heads_per_set, n_sets,
        BLOCK=block, HB=hb, INDEXED=indices is not None, num_warps=4,
        **({} if interpreting() else {"num_stages": 1}))
    return acc


def accumulate_weights_ref(logits, lse, acc, counts, heads_per_set, indices=None):
    """Torch reference of :func:`accumulate_weights` (in place, returns acc)."""
    _check_acc(logits, lse, acc, counts, heads_per_set, indices)
    B, H, n = logits.shape
    valid = torch.arange(n, device=logits.device) < counts.long()[:, None]  # [B,N]
    w = torch.exp(logits.float() - lse.float()[..., None]).masked_fill(~valid[:, None], 0.0)
    w = w.reshape(B, H // heads_per_set, heads_per_set, n).sum(2)
    if indices is None:
        acc[:, :, :n] += w
    else:
        acc.scatter_add_(1, indices.long().masked_fill(~valid, 0), w[:, 0].masked_fill(~valid, 0.0))
    return acc


__all__ = ["decode_attention_with_logits", "decode_attention_with_logits_ref",
           "accumulate_weights", "accumulate_weights_ref"]
