"""Pure-torch attention used by every ``*_ref`` function (tests, and the runtime's CPU path)."""
from __future__ import annotations

import torch


def attend(q, k, v, scale: float, compute_dtype=torch.float32):
    """softmax(q·kᵀ·scale)·v over the last two dims, computed in ``compute_dtype``.

    q[..., M, d], k and v [..., N, d] -> (o[..., M, d] in compute_dtype, lse[..., M] fp32, natural
    log). With ``compute_dtype`` = the inputs' dtype this is the same-precision torch baseline that
    kernel errors are measured against (flash-attention's ``upcast=False`` reference)."""
    cd = compute_dtype
    logits = torch.matmul(q.to(cd), k.to(cd).transpose(-1, -2)) * scale
    lse = torch.logsumexp(logits.float(), dim=-1)
    if k.shape[-2] == 0:
        return torch.zeros(*q.shape, dtype=cd, device=q.device), lse
    p = torch.softmax(logits, dim=-1)
    return torch.matmul(p, v.to(cd)), lse


def group_view(q_b: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """q of one sequence [H, d] -> [Hkv, G, d] (query heads h = kvh·G + g)."""
    H, d = q_b.shape
    return q_b.reshape(kv_heads, H // kv_heads, d)
