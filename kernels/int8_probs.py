"""Gathered decode attention over an INT8 cache, optionally writing its logits (ALISA, arXiv
2403.17312 §4.2 and §5): the listed int8 rows are read in place and dequantized inside the
int8 split-K kernel (kernels/_attention_kernels.py ``_attn_int8_kernel``, gathered rows),
never copied out.

``indices[B, Hsel, K]`` int32 with the first ``counts[b, hs]`` valid (Hsel = Hkv: a list shared
by the G query heads of a KV head; Hsel = H: one list per query head), rows in the int8 format of
kernels/int8kv.py. Per (sequence, list) read counts·(2·d + 2·(2 + 2) + 4) bytes: int8 K and V, an
fp16 scale and zero point each, the int32 index; + G·counts·4 bytes of fp32 logits when
``logits``. ``page_size`` > 1: the list holds pages of that many rows (counts stay in rows).
"""
from __future__ import annotations

import torch

from ._attention import GATHER, run_attention
from ._common import default_scale, last_dim_contiguous, splits_for
from .gather import _heads, pages_to_rows
from .int8kv import _check, _same_strides, dequantize_kv
from .scores import decode_attention_with_logits_ref


def gathered_decode_attention_int8(q, kq, vq, k_scale, k_zero, v_scale, v_zero, indices, counts, *,
                                   logits=False, scale=None, num_splits=None, page_size=1):
    """o [B,H,d] in q's dtype; with ``logits`` (o, lse [B,H] fp32, logits [B,H,N] fp32 natural-log,
    N = K·page_size, in list order; entries past a count are left unwritten)."""
    _check(q, kq, vq, k_scale, k_zero, v_scale, v_zero)
    B, H, Hkv, G, d, Hsel = _heads(q, kq, indices, counts)
    q, kq, vq = (last_dim_contiguous(t) for t in (q, kq, vq))
    ks, kz = _same_strides(k_scale, k_zero)
    vs, vz = _same_strides(v_scale, v_zero)
    n = indices.shape[2] * int(page_size)
    buf = torch.empty(B, H, n, device=q.device, dtype=torch.float32) if logits else None
    splits = splits_for(B, Hsel, n, num_splits)
    out = run_attention(q, kq, vq, mode=GATHER, scale=default_scale(d, scale), splits=splits,
                        prog_heads=Hsel, hpp=G if Hsel == Hkv else 1, indices=indices.to(torch.int32),
                        counts=counts.to(torch.int32), int8=(ks, kz, vs, vz), return_lse=logits,
                        logits=buf, page=int(page_size))
    return (*out, buf) if logits else out


def gathered_decode_attention_int8_ref(q, kq, vq, k_scale, k_zero, v_scale, v_zero, indices, counts,
                                       *, logits=False, scale=None, num_splits=None, page_size=1,
                                       out_dtype=None):
    """fp32 torch reference: dequantize the whole cache, then kernels.scores' reference over the
    list (unwritten logits: −inf)."""
    _check(q, kq, vq, k_scale, k_zero, v_scale, v_zero)
    _heads(q, kq, indices, counts)
    if page_size > 1:
        indices = pages_to_rows(indices, page_size)
    k = dequantize_kv(kq, k_scale, k_zero)
    v = dequantize_kv(vq, v_scale, v_zero)
    o, lse, lg = decode_attention_with_logits_ref(q.float(), k, v, indices=indices, counts=counts,
                                                  scale=scale, out_dtype=out_dtype or q.dtype)
    return (o, lse, lg) if logits else o


__all__ = ["gathered_decode_attention_int8", "gathered_decode_attention_int8_ref"]
