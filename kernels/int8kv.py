"""INT8 KV cache: per-row asymmetric quantization and decode attention that dequantizes in-kernel.

ALISA (arXiv 2403.17312, §5) compresses the KV cache to INT8 with an asymmetric scheme: scale
``(max − min)/255`` and a zero point. Here one (scale, zero) pair per cached row (token, KV head),
over the d channels, both fp16:

    scale = max((max − min)/255, 2⁻¹⁴)      zero = −128 − min/scale      (fp16, not rounded)
    xq    = clamp(round(x/scale + zero), −128, 127)      x ≈ (xq − zero)·scale

Quantizing with the stored fp16 scale and zero keeps the round trip within ~0.5 step
(+ fp16 rounding of ``zero``, ≤ 0.25 step while |zero| < 1024, i.e. unless a row's mean is far
from 0 relative to its range). Bytes per row: d (int8) + 4 (scale, zero) instead of 2·d.

``decode_attention_int8`` is ``decode_attention`` reading int8 rows: read 2·S·(d + 4) bytes per
(sequence, KV head). The int8 values enter fp16 tensor-core dots unchanged (exact in fp16) and the
scale and zero point are applied per row around the dots (kernels/_attention_kernels.py); q is rounded to
fp16 for them (|q| clamped to 65504), the output is in q's dtype.
"""
from __future__ import annotations

import torch

from ._attention import DENSE, run_attention
from ._common import (check_decode_args, default_scale, last_dim_contiguous, max_len,
                      splits_for)
from ._reference import attend, group_view

MIN_SCALE = 2.0 ** -14  # smallest normal fp16: constant rows keep a usable scale


def quantize_kv(x: torch.Tensor):
    """x[..., d] -> (xq int8 [..., d], scale fp16 [...], zero fp16 [...]); x ≈ (xq − zero)·scale."""
    xf = x.float()
    lo, hi = xf.amin(dim=-1), xf.amax(dim=-1)
    scale = ((hi - lo) / 255.0).clamp_min(MIN_SCALE).to(torch.float16)
    zero = (-128.0 - lo / scale.float()).to(torch.float16)
    xq = torch.round(xf / scale.float()[..., None] + zero.float()[..., None])
    return xq.clamp_(-128, 127).to(torch.int8), scale, zero


quantize_kv_ref = quantize_kv  # already pure torch: the reference is the function itself


def dequantize_kv(xq: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                  dtype=torch.float32) -> torch.Tensor:
    """(xq − zero)·scale in ``dtype`` (computed in fp32)."""
    return ((xq.float() - zero.float()[..., None]) * scale.float()[..., None]).to(dtype)


def _check(q, kq, vq, k_scale, k_zero, v_scale, v_zero):
    dims = check_decode_args(q, kq, vq)
    if kq.dtype != torch.int8 or vq.dtype != torch.int8:
        raise ValueError(f"kq and vq must be int8, got {kq.dtype} and {vq.dtype}")
    for name, t in (("k_scale", k_scale), ("k_zero", k_zero), ("v_scale", v_scale),
                    ("v_zero", v_zero)):
        if t.shape != kq.shape[:3]:
            raise ValueError(f"{name} must have shape {tuple(kq.shape[:3])}, got {tuple(t.shape)}")
    return dims


def _same_strides(scale, zero):
    if scale.stride() == zero.stride():
        return scale, zero
    return scale.contiguous(), zero.contiguous()


def decode_attention_int8(q, kq, vq, k_scale, k_zero, v_scale, v_zero, seq_lens, *, scale=None,
                          num_splits=None):
    """Dense split-K decode attention over an int8 cache (see module doc for the format)."""
    B, H, Hkv, G, d = _check(q, kq, vq, k_scale, k_zero, v_scale, v_zero)
    q, kq, vq = (last_dim_contiguous(t) for t in (q, kq, vq))
    ks, kz = _same_strides(k_scale, k_zero)
    vs, vz = _same_strides(v_scale, v_zero)
    seq_lens = seq_lens.to(torch.int32)
    rows = max_len(seq_lens) if num_splits is None else 0
    splits = splits_for(B, Hkv, rows, num_splits)
    return run_attention(q, kq, vq, mode=DENSE, scale=default_scale(d, scale), splits=splits,
                         prog_heads=Hkv, hpp=G, seq_lens=seq_lens, int8=(ks, kz, vs, vz))


def decode_attention_int8_ref(q, kq, vq, k_scale, k_zero, v_scale, v_zero, seq_lens, *,
                              scale=None, num_splits=None, compute_dtype=torch.float32,
                              out_dtype=None):
    """Torch reference: dequantize (to ``compute_dtype``), then dense attention."""
    B, H, Hkv, G, d = _check(q, kq, vq, k_scale, k_zero, v_scale, v_zero)
    scale = default_scale(d, scale)
    out = torch.empty(B, H, d, dtype=compute_dtype, device=q.device)
    for b, n in enumerate(seq_lens.tolist()):
        k = dequantize_kv(kq[b, :, :n], k_scale[b, :, :n], k_zero[b, :, :n], compute_dtype)
        v = dequantize_kv(vq[b, :, :n], v_scale[b, :, :n], v_zero[b, :, :n], compute_dtype)
        o, _ = attend(group_view(q[b], Hkv), k, v, scale, compute_dtype)
        out[b] = o.reshape(H, d)
    return out.to(out_dtype or q.dtype)
