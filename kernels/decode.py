"""Dense and windowed decode attention (split-K flash-decoding, GQA-aware).

Flash-decoding (Dao et al., "Flash-Decoding for long-context inference", 2023; FlashInfer and vLLM's
split-K decode kernels): one query token per sequence, the cached rows split across programs so a
small batch still fills the GPU, fp32 partials merged by a second small kernel. One program serves
the G query heads of a KV head, so K/V are read from HBM once: per (sequence, KV head)
read 2·S·d·b + 2·G·d·b (q, o); FLOPs 4·G·S·d. Split policy: ``kvsim.methods.attention.split_count``
(the cost model's), with the longest sequence of the batch as the row count.

``windowed_decode_attention`` covers StreamingLLM (sink + recent window) and DuoAttention (a
per-KV-head choice of full retrieval heads and streaming heads, arXiv 2410.10819) in one launch;
streaming heads read only their sink + recent rows: 2·(sink+recent)·d·b per head.
"""
from __future__ import annotations

import torch

from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS

from ._attention import DENSE, WINDOW, run_attention
from ._common import (check_decode_args, default_scale, last_dim_contiguous, max_len,
                      splits_for)
from ._reference import attend, group_view


def _prepare(q, k, v, seq_lens):
    B, H, Hkv, G, d = check_decode_args(q, k, v)
    if seq_lens.shape != (B,):
        raise ValueError(f"seq_lens must have shape [{B}], got {tuple(seq_lens.shape)}")
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    return q, k, v, seq_lens.to(torch.int32), (B, H, Hkv, G, d)


def _contiguous(q, k, v, seq_lens, hpp, scale, num_splits, **extra):
    """The split kernel over rows [0, seq_len) of a contiguous cache, with the dense split policy
    (about one wave; the longest sequence's rows unless ``num_splits`` is given)."""
    rows = max_len(seq_lens) if num_splits is None else 0
    splits = splits_for(q.shape[0], k.shape[1], rows, num_splits, target=DENSE_TARGET_PROGRAMS)
    return run_attention(q, k, v, mode=DENSE, scale=default_scale(q.shape[2], scale), splits=splits,
                         prog_heads=k.shape[1], hpp=hpp, seq_lens=seq_lens, **extra)


def decode_attention(q, k, v, seq_lens, *, scale=None, num_splits=None, return_lse: bool = False):
    """o[B,H,d] = softmax(q·K[:seq_len]ᵀ·scale)·V[:seq_len] per query head (q's dtype).

    q[B,H,d]; k, v [B,Hkv,S_max,d] (strided views allowed); seq_lens[B] int32. Without
    ``num_splits`` the split count comes from ``split_count(B, Hkv, max(seq_lens))``, which reads
    max(seq_lens) back to the host (pass num_splits to avoid the sync). ``return_lse``: (o,
    lse[B,H] fp32, natural log; −inf over no rows), one more allocation, B·H·4 bytes written."""
    q, k, v, seq_lens, (B, H, Hkv, G, d) = _prepare(q, k, v, seq_lens)
    return _contiguous(q, k, v, seq_lens, G, scale, num_splits, return_lse=return_lse)


def merge_partials(outputs, lses, out_dtype, return_lse: bool = False):
    """Attention over disjoint row sets merged into attention over their union (flash-decoding's
    log-sum-exp combine): outputs P × [B,H,d], lses P × [B,H] fp32 (natural log) ->
    Σ_p softmax_p(lse)·o_p in fp32, cast to ``out_dtype``; ``return_lse``: also logsumexp_p(lse).
    Plain torch, six launches (stack o, stack lse, softmax, mul, sum, cast; no cast to fp32;
    + logsumexp with ``return_lse``) and a view: read P·B·H·(d·b + 4) + P·B·H·d·4 (the fp32
    products), write P·B·H·(d·b + 4) (the stacks) + P·B·H·(d + 1)·4 + B·H·d·b."""
    lse = torch.stack(lses)  # [P, B, H]
    weights = torch.softmax(lse, dim=0)
    o = (torch.stack(outputs) * weights[..., None]).sum(0).to(out_dtype)  # the product in fp32
    return (o, torch.logsumexp(lse, dim=0)) if return_lse else o


merge_partials_ref = merge_partials  # plain torch: the same function on every device


def windowed_decode_attention(q, k, v, seq_lens, sink: int, recent: int, head_is_full=None, *,
                              scale=None, num_splits=None):
    """Attention over rows [0, sink) ∪ [seq_len−recent, seq_len) of each KV head; all rows where
    sink + recent ≥ seq_len or ``head_is_full[h]`` (bool [Hkv], DuoAttention retrieval heads)."""
    q, k, v, seq_lens, (B, H, Hkv, G, d) = _prepare(q, k, v, seq_lens)
    sink, recent = int(sink), int(recent)
    if sink < 0 or recent < 0:
        raise ValueError(f"sink and recent must be >= 0, got sink={sink}, recent={recent}")
    full = None
    if head_is_full is not None:
        if tuple(head_is_full.shape) != (Hkv,):
            raise ValueError(f"head_is_full must have shape [{Hkv}], "
                             f"got {tuple(head_is_full.shape)}")
        full = head_is_full.to(device=q.device, dtype=torch.int8)
    rows = 0
    if num_splits is None:
        longest = max_len(seq_lens)
        any_full = full is not None and bool(full.any())
        rows = longest if any_full else min(longest, sink + recent)
    splits = splits_for(B, Hkv, rows, num_splits)
    return run_attention(q, k, v, mode=WINDOW, scale=default_scale(d, scale), splits=splits,
                         prog_heads=Hkv, hpp=G, seq_lens=seq_lens, full=full, sink=sink,
                         recent=recent)


def rope_decode_attention(q, k, v, seq_lens, positions, cos, sin, *, scale=None, num_splits=None):
    """Dense decode attention over keys cached before RoPE (StreamingLLM): cache row j is rotated
    to ``positions[j]`` (int, [S_max], shared by sequences and heads) as it is loaded, with
    cos/sin tables [P, d/2] (angle pos·θ^(−2i/d), i < d/2; the HF rotate_half convention).
    q is already rotated. Same bytes as :func:`decode_attention` + S·4 positions (the tables stay
    in L2); the rotated keys are never written."""
    q, k, v, seq_lens, (B, H, Hkv, G, d) = _prepare(q, k, v, seq_lens)
    if positions.shape != (k.shape[2],) or cos.shape[-1] != d // 2 or sin.shape != cos.shape:
        raise ValueError(f"want positions [{k.shape[2]}] and cos/sin [P, {d // 2}]; got "
                         f"{tuple(positions.shape)}, {tuple(cos.shape)}, {tuple(sin.shape)}")
    return _contiguous(q, k, v, seq_lens, G, scale, num_splits,
                       rope=(positions.to(torch.int32), cos, sin))


def rope_decode_attention_ref(q, k, v, seq_lens, positions, cos, sin, *, scale=None,
                              num_splits=None, out_dtype=None):
    """Torch reference of :func:`rope_decode_attention`: rotate in fp32, then attend in fp32."""
    half = k.shape[-1] // 2
    c = cos.float()[positions.long()][None, None]
    s = sin.float()[positions.long()][None, None]
    lo, hi = k.float()[..., :half], k.float()[..., half:]
    rotated = torch.cat([lo * c - hi * s, hi * c + lo * s], -1)
    return decode_attention_ref(q, rotated, v, seq_lens, scale=scale, out_dtype=out_dtype)


def positional_decode_attention(q, k, v, seq_lens, q_pos, k_pos, *, scale=None, num_splits=None):
    """Several query tokens per sequence over one cache: q [B, Hkv·Q, d] holds the Q query rows
    of each KV head together (KV head j: rows j·Q … j·Q+Q−1), q_pos [B, Hkv·Q] their positions,
    k_pos [B, S_max] the position in each cache row (−1: empty); row h sees cache row j iff
    0 ≤ k_pos[j] ≤ q_pos[h] and j < seq_len. Each KV row is read once for its Q query rows."""
    q, k, v, seq_lens, (B, H, Hkv, Q, d) = _prepare(q, k, v, seq_lens)
    if q_pos.shape != (B, H) or k_pos.shape != (B, k.shape[2]):
        raise ValueError(f"want q_pos [{B}, {H}] and k_pos [{B}, {k.shape[2]}]; got "
                         f"{tuple(q_pos.shape)}, {tuple(k_pos.shape)}")
    return _contiguous(q, k, v, seq_lens, Q, scale, num_splits,
                       positions=(q_pos.to(torch.int32), k_pos.to(torch.int32)))


def positional_decode_attention_ref(q, k, v, seq_lens, q_pos, k_pos, *, scale=None,
                                    num_splits=None, out_dtype=None):
    """Torch reference of :func:`positional_decode_attention` (fp32)."""
    B, H, Hkv, Q, d = check_decode_args(q, k, v)
    scale = default_scale(d, scale)
    rows = torch.arange(k.shape[2], device=q.device)
    seen = ((k_pos[:, None, :] >= 0) & (k_pos[:, None, :] <= q_pos[:, :, None])
            & (rows < seq_lens.long()[:, None, None]))  # [B, H, S]
    kf = k.float().repeat_interleave(Q, dim=1).nan_to_num(0.0)
    vf = v.float().repeat_interleave(Q, dim=1).nan_to_num(0.0)
    logits = (kf @ q.float()[..., None])[..., 0] * scale
    p = torch.softmax(logits.masked_fill(~seen, float("-inf")), -1).nan_to_num(0.0)
    return (p[:, :, None, :] @ vf)[:, :, 0].to(out_dtype or q.dtype)


def window_rows(seq_len: int, sink: int, recent: int, full: bool, device=None) -> torch.Tensor:
    """The cache rows a head attends to under a sink + recent window (ascending)."""
    if full or sink + recent >= seq_len:
        return torch.arange(seq_len, device=device)
    return torch.cat([torch.arange(sink, device=device),
                      torch.arange(seq_len - recent, seq_len, device=device)])


def decode_attention_ref(q, k, v, seq_lens, *, scale=None, num_splits=None,
                         compute_dtype=torch.float32, out_dtype=None, return_lse: bool = False):
    """Torch reference of :func:`decode_attention` (``num_splits`` ignored). Computes in
    ``compute_dtype``; returns ``out_dtype`` (default q's dtype), and lse [B,H] fp32 with
    ``return_lse``."""
    B, H, Hkv, G, d = check_decode_args(q, k, v)
    scale = default_scale(d, scale)
    out = torch.empty(B, H, d, dtype=compute_dtype, device=q.device)
    lse = torch.empty(B, H, dtype=torch.float32, device=q.device)
    for b, n in enumerate(seq_lens.tolist()):
        o, lse_b = attend(group_view(q[b], Hkv), k[b, :, :n], v[b, :, :n], scale, compute_dtype)
        out[b], lse[b] = o.reshape(H, d), lse_b.reshape(H)
    out = out.to(out_dtype or q.dtype)
    return (out, lse) if return_lse else out


def windowed_decode_attention_ref(q, k, v, seq_lens, sink: int, recent: int, head_is_full=None,
                                  *, scale=None, num_splits=None, compute_dtype=torch.float32,
                                  out_dtype=None):
    """Torch reference of :func:`windowed_decode_attention`."""
    B, H, Hkv, G, d = check_decode_args(q, k, v)
    scale = default_scale(d, scale)
    full = [False] * Hkv if head_is_full is None else [bool(x) for x in head_is_full.tolist()]
    out = torch.empty(B, H, d, dtype=compute_dtype, device=q.device)
    for b, n in enumerate(seq_lens.tolist()):
        qg = group_view(q[b], Hkv)
        for h in range(Hkv):
            rows = window_rows(n, sink, recent, full[h], device=k.device)
            o, _ = attend(qg[h], k[b, h, rows], v[b, h, rows], scale, compute_dtype)
            out[b, h * G:(h + 1) * G] = o
    return out.to(out_dtype or q.dtype)
