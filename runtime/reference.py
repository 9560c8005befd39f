"""Pure-torch references with the kernel contract's signatures (kernels/*.py), plus the two
attention forms only the runtime needs (``attention_with_probs``, ``masked_attention``).

Shapes: q [B,H,d]; k, v [B,Hkv,S,d]; query head h reads KV head h // G, G = H / Hkv.
Contract references compute in fp32 and return q's dtype. The runtime-only two multiply in the
input dtype (fp32 accumulation in the matmul) and take the softmax in fp32, because they also
run on the GPU (H2O's and ALISA's synthetic prefill scores, TidalDecode's correction pass).
"""
from __future__ import annotations

import torch

INT8_OFFSET = 128  # xq = round((x − zero)/scale) − 128 stores [0, 255] in int8


def _scale(q: torch.Tensor, scale) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def _grouped(q: torch.Tensor, heads: int) -> torch.Tensor:
    """q [B,H,d] -> [B,heads,G,d]."""
    B, H, d = q.shape
    return q.reshape(B, heads, H // heads, d)


def _softmax_masked(logits: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float().masked_fill(invalid, float("-inf")), dim=-1)


def decode_attention_ref(q, k, v, seq_lens, *, scale=None, num_splits=None, return_lse=False):
    """o[b,h] = softmax(q·K[:L]ᵀ·scale)·V[:L], L = seq_lens[b]; num_splits changes nothing;
    ``return_lse``: also lse [B,H] fp32 (natural log)."""
    B, Hkv, S, d = k.shape
    logits = _grouped(q.float(), Hkv) @ k.float().transpose(-1, -2) * _scale(q, scale)
    invalid = (torch.arange(S, device=k.device)[None] >= seq_lens[:, None].long())[:, None, None]
    o = (_softmax_masked(logits, invalid) @ v.float()).reshape(q.shape).to(q.dtype)
    if return_lse:
        return o, torch.logsumexp(logits.masked_fill(invalid, float("-inf")), -1).reshape(B, -1)
    return o


def _take(t: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows t[b, h // rep, indices[b, h, j]] for indices [B,Hsel,K] -> [B,Hsel,K,...]: one
    index_select of whole rows over the flattened [B·Hkv·S, ...] view."""
    B, Hsel, K = indices.shape
    Hkv, S = t.shape[1], t.shape[2]
    b = torch.arange(B, device=t.device)[:, None, None]
    h = (torch.arange(Hsel, device=t.device) // (Hsel // Hkv))[None, :, None]
    flat = (b * Hkv + h) * S + indices.long().clamp(0, S - 1)
    rows = t.reshape(B * Hkv * S, *t.shape[3:]).index_select(0, flat.reshape(-1))
    return rows.reshape(B, Hsel, K, *t.shape[3:])


def pages_to_rows(pages: torch.Tensor, page_size: int) -> torch.Tensor:
    """Page lists [..., n] -> int32 row lists [..., n·page_size] (page p: rows p·P ... p·P + P − 1)."""
    rows = pages.long()[..., None] * page_size + torch.arange(page_size, device=pages.device)
    return rows.flatten(-2).int()


def gathered_decode_attention_ref(q, k, v, indices, counts, *, scale=None, return_lse=False, page_size=1):
    """Attention over the rows indices[b, hs, :counts[b, hs]]; Hsel = Hkv or H. ``page_size`` > 1:
    indices list pages of that many rows."""
    if page_size > 1:
        indices = pages_to_rows(indices, page_size)
    B, Hsel, K = indices.shape
    ks, vs = _take(k, indices).float(), _take(v, indices).float()
    logits = _grouped(q.float(), Hsel) @ ks.transpose(-1, -2) * _scale(q, scale)  # [B,Hsel,G,K]
    invalid = (torch.arange(K, device=q.device) >= counts[..., None].long())[:, :, None]
    masked = logits.masked_fill(invalid, float("-inf"))
    o = (torch.softmax(masked, -1) @ vs).reshape(q.shape).to(q.dtype)
    if return_lse:
        return o, torch.logsumexp(masked, -1).reshape(B, -1)
    return o


def quest_page_scores_ref(q, kmin, kmax, n_pages):
    """Quest (arXiv 2406.10774 §3.2): Σ_i max(q_i·M_i, q_i·m_i) = q⁺·M + q⁻·m per page."""
    B, Hkv, P, d = kmin.shape
    qg = _grouped(q.float(), Hkv)
    scores = qg.clamp(min=0) @ kmax.float().transpose(-1, -2) + qg.clamp(max=0) @ kmin.float().transpose(-1, -2)
    invalid = (torch.arange(P, device=q.device)[None] >= n_pages[:, None].long())[:, None, None]
    return scores.masked_fill(invalid, float("-inf")).reshape(B, -1, P)


def quantize_kv_ref(x):
    """ALISA §5 INT8: per row (last dim) asymmetric, scale = (max − min)/255, zero = min, both
    fp16; row of d elements -> d int8 bytes + 4 bytes of scale and zero."""
    xf = x.float()
    lo, hi = xf.amin(-1), xf.amax(-1)
    scale = ((hi - lo) / 255.0).clamp_min(1e-4).half()
    zero = lo.half()
    xq = torch.round((xf - zero.float()[..., None]) / scale.float()[..., None]) - INT8_OFFSET
    return xq.clamp(-128, 127).to(torch.int8), scale, zero


def dequantize_kv_ref(xq, scale, zero, dtype=torch.float32):
    return ((xq.float() + INT8_OFFSET) * scale.float()[..., None] + zero.float()[..., None]).to(dtype)


def decode_attention_int8_ref(q, kq, vq, k_scale, k_zero, v_scale, v_zero, seq_lens, *, scale=None, num_splits=None):
    k = dequantize_kv_ref(kq, k_scale, k_zero)
    v = dequantize_kv_ref(vq, v_scale, v_zero)
    return decode_attention_ref(q, k, v, seq_lens, scale=scale)


def attention_with_probs_ref(q, k, v, seq_lens, *, scale=None):
    """Eager decode attention that also returns the fp32 probabilities [B,H,S] (0 beyond
    seq_lens), as H2O/ALISA accumulate them: read K, V once; write and read S·4 B of scores."""
    B, Hkv, S, d = k.shape
    logits = (_grouped(q, Hkv) @ k.transpose(-1, -2)).float() * _scale(q, scale)
    invalid = (torch.arange(S, device=k.device)[None] >= seq_lens[:, None].long())[:, None, None]
    probs = _softmax_masked(logits, invalid)
    o = (probs.to(v.dtype) @ v).reshape(q.shape).to(q.dtype)
    return o, probs.reshape(B, -1, S)


def masked_attention_ref(q, parts, *, scale=None):
    """T queries q [B,T,H,d] over several key blocks at once: parts = [(k [B,Hkv,S_i,d], v,
    visible [B,T,S_i] bool)]. One softmax across the blocks (no concatenation of K/V)."""
    B, T, H, d = q.shape
    Hkv = parts[0][0].shape[1]
    qg = q.reshape(B, T, Hkv, H // Hkv, d).permute(0, 2, 1, 3, 4).reshape(B, Hkv, T * H // Hkv, d)
    logits, sizes = [], []
    for k, _v, visible in parts:
        lg = (qg @ k.transpose(-1, -2)).float() * _scale(q, scale)  # [B,Hkv,T·G,S_i]
        lg = lg.reshape(B, Hkv, T, H // Hkv, -1).masked_fill(~visible[:, None, :, None], float("-inf"))
        logits.append(lg)
        sizes.append(k.shape[2])
    probs = torch.softmax(torch.cat(logits, -1), -1).split(sizes, -1)
    o = sum(p.reshape(B, Hkv, T * H // Hkv, -1).to(v.dtype) @ v for p, (_k, v, _m) in zip(probs, parts))
    return o.reshape(B, Hkv, T, H // Hkv, d).permute(0, 2, 1, 3, 4).reshape(B, T, H, d).to(q.dtype)
