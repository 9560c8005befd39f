"""SparQ's small steps as one launch each (arXiv 2312.04985 Alg. 1; GQA as kvsim.methods.sparq).

:func:`sparq_components`, step 1: per (sequence, KV head) the r components with the largest |q|
summed over the group's G query heads (i1), and each query head's temperature
τ = sqrt(d · Σ_{i∈i1} |q_i| / Σ_i |q_i|). One program per (sequence, KV head): read G·d·b (q),
write r·4 (i1, int32, by descending |q|, ties to the lower component) + G·4 (τ). The top-r is a
rank count over the d components (d² compares in registers): one kernel for torch's abs, sum,
topk, gather and five elementwise ones.
:func:`sparq_mix`, steps 4 and 6: α = Σ_{j∈i2} ŝ_j per query head, then o = α·y + (1 − α)·v̄
with v̄ = Σv / n. One program per (sequence, query head): read k·(8 + 4) (i2, ŝ at i2) +
d·b (y) + d·4 (Σv), write d·b. The k indices are loaded in blocks of up to MIX_BLOCK at once:
each block costs two dependent memory latencies (i2, then ŝ at i2), so few blocks keep the
kernel short when B·H programs are few.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernels._common import interpreting, launcher, pow2_at_least

MIX_BLOCK = 8192  # i2 entries per block of the α sum (k = S/16 reaches 8192 at 128k)


@triton.jit
def _components_kernel(Q, I1, TAU, sqb, sqh, r, Hkv, H,
                       G: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // Hkv).to(tl.int64)
    kvh = pid % Hkv
    offs_g = tl.arange(0, BLOCK_G)
    g_mask = offs_g < G
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b * sqb + (kvh * G + offs_g)[:, None] * sqh + offs_d[None, :],
                mask=g_mask[:, None], other=0.0).to(tl.float32)
    a = tl.abs(q)
    score = tl.sum(a, 0)  # |q| summed over the group, [D]
    ahead = (score[None, :] > score[:, None]) | ((score[None, :] == score[:, None])
                                                 & (offs_d[None, :] < offs_d[:, None]))
    rank = tl.sum(ahead.to(tl.int32), 1)  # components ranked before each one
    chosen = rank < r
    tl.store(I1 + (b * Hkv + kvh) * r + rank, offs_d, mask=chosen)
    picked = tl.sum(tl.where(chosen[None, :], a, 0.0), 1)
    tau = tl.sqrt(D * picked / tl.sum(a, 1))
    tl.store(TAU + b * H + kvh * G + offs_g, tau, mask=g_mask)


@triton.jit
def _mix_kernel(Y, SH, I2, VS, O, k, inv_n, syb, syh, ssb, ssh, sib, sih, svb, svh, sob, soh, H,
                G: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // H).to(tl.int64)
    h = pid % H
    kvh = h // G
    alpha = 0.0
    for off in range(0, k, BLOCK):
        j = off + tl.arange(0, BLOCK)
        rows = tl.load(I2 + b * sib + kvh * sih + j, mask=j < k, other=0)
        alpha += tl.sum(tl.load(SH + b * ssb + h * ssh + rows, mask=j < k, other=0.0), 0)
    d = tl.arange(0, D)
    y = tl.load(Y + b * syb + h * syh + d).to(tl.float32)
    v_mean = tl.load(VS + b * svb + kvh * svh + d).to(tl.float32) * inv_n
    tl.store(O + b * sob + h * soh + d, (alpha * y + (1.0 - alpha) * v_mean).to(O.dtype.element_ty))


def sparq_mix(y, s_hat, i2, v_sum, n: int):
    """o [B,H,d] (y's dtype): α·y + (1 − α)·Σv/n, α = ŝ summed over i2 [B,Hkv,k] per query head;
    s_hat [B,H,S] fp32, v_sum [B,Hkv,d] fp32."""
    B, H, d = y.shape
    Hkv, k = i2.shape[1], i2.shape[2]
    if s_hat.shape[:2] != (B, H) or v_sum.shape != (B, Hkv, d) or i2.shape[0] != B or H % Hkv:
        raise ValueError(f"shapes disagree: y{tuple(y.shape)}, s_hat{tuple(s_hat.shape)}, "
                         f"i2{tuple(i2.shape)}, v_sum{tuple(v_sum.shape)}")
    if y.stride(-1) != 1:
        y = y.contiguous()
    o = torch.empty_like(y)
    launcher(_mix_kernel, y)[(B * H,)](
        y, s_hat, i2, v_sum, o, k, 1.0 / n, y.stride(0), y.stride(1), s_hat.stride(0),
        s_hat.stride(1), i2.stride(0), i2.stride(1), v_sum.stride(0), v_sum.stride(1),
        o.stride(0), o.stride(1), H, G=H // Hkv, D=d, BLOCK=min(pow2_at_least(k), MIX_BLOCK),
        num_warps=8 if k > 2048 else 4, **({} if interpreting() else {"num_stages": 1}))
    return o


def sparq_mix_ref(y, s_hat, i2, v_sum, n: int):
    """Torch reference of :func:`sparq_mix` (fp32 math, y's dtype out)."""
    B, H, d = y.shape
    Hkv, k = i2.shape[1], i2.shape[2]
    G = H // Hkv
    picked = s_hat.reshape(B, Hkv, G, -1).gather(-1, i2.long()[:, :, None, :].expand(B, Hkv, G, k))
    alpha = picked.sum(-1).reshape(B, H, 1)
    v_mean = (v_sum.float() / n).repeat_interleave(G, dim=1)
    return (alpha * y.float() + (1 - alpha) * v_mean).to(y.dtype)


def _check(q, kv_heads: int, r: int):
    if q.dim() != 3 or q.shape[1] % kv_heads:
        raise ValueError(f"want q [B, H, d] with H a multiple of {kv_heads}, got {tuple(q.shape)}")
    d = q.shape[2]
    if d & (d - 1) or not 1 <= r <= d:
        raise ValueError(f"need a power-of-two head dim and 1 <= r <= d, got d={d}, r={r}")
    return q.shape[0], q.shape[1], d


def sparq_components(q: torch.Tensor, kv_heads: int, r: int):
    """(i1 [B, Hkv, r] int32, tau [B, H] fp32) of q [B, H, d] (module doc)."""
    B, H, d = _check(q, kv_heads, r)
    G = H // kv_heads
    if q.stride(-1) != 1:
        q = q.contiguous()
    i1 = torch.empty(B, kv_heads, r, device=q.device, dtype=torch.int32)
    tau = torch.empty(B, H, device=q.device, dtype=torch.float32)
    launcher(_components_kernel, q)[(B * kv_heads,)](
        q, i1, tau, q.stride(0), q.stride(1), r, kv_heads, H, G=G, BLOCK_G=pow2_at_least(G),
        D=d, num_warps=4, **({} if interpreting() else {"num_stages": 1}))
    return i1, tau


def sparq_components_ref(q: torch.Tensor, kv_heads: int, r: int):
    """Torch reference of :func:`sparq_components` (the runtime's former eager step 1)."""
    B, H, d = _check(q, kv_heads, r)
    qg = q.float().reshape(B, kv_heads, H // kv_heads, d)
    i1 = qg.abs().sum(2).topk(r, dim=-1).indices  # [B,Hkv,r]
    q_sel = qg.gather(-1, i1[:, :, None, :].expand(-1, -1, H // kv_heads, -1))
    tau = torch.sqrt(d * q_sel.abs().sum(-1) / qg.abs().sum(-1)).reshape(B, H)
    return i1.int(), tau


__all__ = ["sparq_components", "sparq_components_ref", "sparq_mix", "sparq_mix_ref"]
