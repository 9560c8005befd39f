"""Decode attention over listed cache rows (token-granular sparse attention).

The rows a head reads come from an index list: the top-k tokens of SparQ (arXiv 2312.04985), Quest's
selected pages expanded to tokens (arXiv 2406.10774), H2O's heavy hitters + recent window, ALISA's
sparse window (arXiv 2403.17312), TidalDecode's per-query-head selections (arXiv 2410.05076).

``indices[B, Hsel, K]`` int32, first ``counts[b, h]`` entries valid, any order, no duplicates:
  Hsel == Hkv: one list per KV head, shared by its G query heads (one program serves the group,
               each listed row read once): read counts·(2·d·b + 4) + 2·G·d·b per (sequence, head)
  Hsel == H:   one list per query head (TidalDecode); a program serves one query head and reads
               rows of its KV head h // G: read counts·(2·d·b + 4) + 2·d·b per query head
Split over the list with the same policy as dense decode: ``split_count(B, Hsel, K)``.
"""
from __future__ import annotations

import torch

from ._attention import GATHER, run_attention
from ._common import check_decode_args, default_scale, last_dim_contiguous, splits_for
from ._reference import attend


def _heads(q, k, indices, counts):
    B, H, Hkv, G, d = check_decode_args(q, k, k)
    Hsel = indices.shape[1] if indices.dim() == 3 else -1
    if indices.dim() != 3 or indices.shape[0] != B or Hsel not in (Hkv, H):
        raise ValueError(f"indices must be [B={B}, Hsel, K] with Hsel = Hkv ({Hkv}) or H ({H}); "
                         f"got {tuple(indices.shape)}")
    if tuple(counts.shape) != (B, Hsel):
        raise ValueError(f"counts must have shape [{B}, {Hsel}], got {tuple(counts.shape)}")
    return B, H, Hkv, G, d, Hsel


def gathered_decode_attention(q, k, v, indices, counts, *, scale=None, return_lse=False,
                              num_splits=None, page_size=1):
    """o[B,H,d] (q's dtype) = attention of each query head over the rows listed for it; with
    ``return_lse`` also lse[B,H] fp32 = logsumexp of the scaled logits (natural log), for merging
    with attention over other rows. ``page_size`` > 1: ``indices`` list pages (rows
    page·page_size ... + page_size − 1), ``counts`` count rows (Quest's page list without its
    expansion to tokens: read 4/page_size index bytes per row)."""
    B, H, Hkv, G, d, Hsel = _heads(q, k, indices, counts)
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    indices = indices.to(torch.int32)
    counts = counts.to(torch.int32)
    splits = splits_for(B, Hsel, indices.shape[2] * page_size, num_splits)
    hpp = G if Hsel == Hkv else 1
    return run_attention(q, k, v, mode=GATHER, scale=default_scale(d, scale), splits=splits,
                         prog_heads=Hsel, hpp=hpp, indices=indices, counts=counts,
                         return_lse=return_lse, page=int(page_size))


def pages_to_rows(pages: torch.Tensor, page_size: int) -> torch.Tensor:
    """Page lists [..., n] -> row lists [..., n·page_size] (page p: rows p·P ... p·P + P − 1)."""
    rows = pages.long()[..., None] * page_size + torch.arange(page_size, device=pages.device)
    return rows.flatten(-2)


def gathered_decode_attention_ref(q, k, v, indices, counts, *, scale=None, return_lse=False,
                                  num_splits=None, page_size=1, compute_dtype=torch.float32, out_dtype=None):
    """Torch reference of :func:`gathered_decode_attention` (``num_splits`` ignored)."""
    B, H, Hkv, G, d, Hsel = _heads(q, k, indices, counts)
    if page_size > 1:
        indices = pages_to_rows(indices, page_size)
    scale = default_scale(d, scale)
    hpp = G if Hsel == Hkv else 1
    out = torch.empty(B, H, d, dtype=compute_dtype, device=q.device)
    lse = torch.empty(B, H, dtype=torch.float32, device=q.device)
    cnt = counts.tolist()
    for b in range(B):
        for h in range(Hsel):
            rows = indices[b, h, :cnt[b][h]].long()
            kvh = h * hpp // G
            heads = slice(h * hpp, (h + 1) * hpp)
            o, l = attend(q[b, heads], k[b, kvh, rows], v[b, kvh, rows], scale, compute_dtype)
            out[b, heads], lse[b, heads] = o, l
    out = out.to(out_dtype or q.dtype)
    return (out, lse) if return_lse else out
