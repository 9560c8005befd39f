"""Rotary position embedding (RoPE, arXiv 2104.09864 §3.4) as one kernel: y = x·cos[p] +
rotate_half(x)·sin[p] with the runtime's tables (runtime/model.py Rotary: cos twice, the sign
folded into sin), in place of torch's four to six elementwise kernels (cat, two multiplies, an
add, and a gather of each table row when positions are a tensor).

x [..., d] with up to four leading dims, any strides (last dim contiguous); positions an int or
an integer tensor that broadcasts against x.shape[:-1] (read through its broadcast strides, no
copy). ``out`` may be any view of x's shape (a strided slice of a cache, a permuted layout):
rows are written where it points. Read 2·d·b per row (x and its swapped halves share sectors)
+ the table rows, write d·b. Math in fp32; in bf16 each product is rounded before the sum, as
torch's eager formula does, so the kernel gives the reference's very values (a rotation that
differs by an ulp flips near-ties in the methods' top-k selections); other dtypes round once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import cast, interpreting, launcher, pow2_at_least

BLOCK_ROWS = 16  # rows per program (16 × d=128: 2048 elements, 4 warps)
MAX_LEAD = 4


@triton.jit
def _rope_kernel(X, POS, COS, SIN, OUT, n_rows, n1, n2, n3,
                 sx0, sx1, sx2, sx3, sp0, sp1, sp2, sp3, so0, so1, so2, so3, s_cos, pos_const,
                 HAS_POS: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_R: tl.constexpr,
                 ROUND_EACH: tl.constexpr, EMULATE: tl.constexpr):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    r_mask = r < n_rows
    i3 = r % n3
    rest = r // n3
    i2 = rest % n2
    rest = rest // n2
    i1 = rest % n1
    i0 = rest // n1
    d = tl.arange(0, D_PAD)
    d_mask = d < D
    swapped = (d + D // 2) % D  # rotate_half: element d of cat(x[half:], x[:half])
    mask = r_mask[:, None] & d_mask[None, :]
    x_row = (i0 * sx0 + i1 * sx1 + i2 * sx2 + i3 * sx3)[:, None]
    x = tl.load(X + x_row + d[None, :], mask=mask, other=0.0).to(tl.float32)
    xs = tl.load(X + x_row + swapped[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_POS:
        pos = tl.load(POS + i0 * sp0 + i1 * sp1 + i2 * sp2 + i3 * sp3, mask=r_mask, other=0).to(tl.int64)
    else:
        pos = tl.zeros([BLOCK_R], tl.int64) + pos_const
    table = (pos * s_cos)[:, None] + d[None, :]
    c = tl.load(COS + table, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + table, mask=mask, other=0.0).to(tl.float32)
    if ROUND_EACH:  # as torch's eager bf16 formula: each product rounded, then the sum. The
        # rounding is done in integer bits (cast's EMULATE path): the compiler folds a plain
        # fp32 -> bf16 -> fp32 round trip away (seen on the H100, Triton 3.6: 1-ulp differences)
        y = cast(x * c, tl.bfloat16, True).to(tl.float32) + cast(xs * s, tl.bfloat16, True).to(tl.float32)
    else:
        y = x * c + xs * s
    out_row = (i0 * so0 + i1 * so1 + i2 * so2 + i3 * so3)[:, None]
    tl.store(OUT + out_row + d[None, :], cast(y, OUT.dtype.element_ty, EMULATE), mask=mask)


def _lead(t: torch.Tensor, shape) -> tuple[list[int], list[int]]:
    """Shape and strides of ``t``'s leading dims, padded in front to four."""
    pad = MAX_LEAD - len(shape)
    return [1] * pad + list(shape), [0] * pad + list(t.stride()[: len(shape)])


def _check(x, cos, sin, out):
    if x.dim() < 2 or x.dim() - 1 > MAX_LEAD:
        raise ValueError(f"want x [..., d] with 1 to {MAX_LEAD} leading dims, got {tuple(x.shape)}")
    d = x.shape[-1]
    if d % 2 or cos.shape != sin.shape or cos.dim() != 2 or cos.shape[1] != d:
        raise ValueError(f"want even d and tables cos, sin [positions, {d}]; got x{tuple(x.shape)}, "
                         f"cos{tuple(cos.shape)}, sin{tuple(sin.shape)}")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype):
        raise ValueError(f"out must match x: {tuple(out.shape)} {out.dtype} vs {tuple(x.shape)} {x.dtype}")


def rope(x: torch.Tensor, positions, cos: torch.Tensor, sin: torch.Tensor, *, out=None) -> torch.Tensor:
    """x rotated at ``positions`` (module doc); written into ``out`` when given, else a new
    contiguous tensor."""
    _check(x, cos, sin, out)
    if x.stride(-1) != 1:
        x = x.contiguous()
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if out.stride(-1) != 1 or cos.stride(-1) != 1 or sin.stride(-1) != 1 or cos.stride(0) != sin.stride(0):
        raise ValueError("out and the tables need a contiguous last dim (and the tables one row stride)")
    lead = x.shape[:-1]
    has_pos = isinstance(positions, torch.Tensor)
    if has_pos:
        if positions.dim() > len(lead):
            raise ValueError(f"positions {tuple(positions.shape)} do not broadcast against {tuple(lead)}")
        positions = torch.broadcast_to(positions.to(x.device), lead)  # a view: stride 0 where broadcast
    shape, sx = _lead(x, lead)
    _, so = _lead(out, lead)
    _, sp = _lead(positions, lead) if has_pos else (None, [0] * MAX_LEAD)
    n_rows = shape[0] * shape[1] * shape[2] * shape[3]
    if n_rows == 0:
        return out
    d = x.shape[-1]
    launcher(_rope_kernel, x)[(triton.cdiv(n_rows, BLOCK_ROWS),)](
        x, positions if has_pos else x, cos, sin, out, n_rows, shape[1], shape[2], shape[3],
        *sx, *sp, *so, cos.stride(0), 0 if has_pos else int(positions),
        HAS_POS=has_pos, D=d, D_PAD=pow2_at_least(d), BLOCK_R=BLOCK_ROWS,
        ROUND_EACH=x.dtype == torch.bfloat16, EMULATE=interpreting(), num_warps=4)
    return out


def rope_ref(x: torch.Tensor, positions, cos: torch.Tensor, sin: torch.Tensor, *, out=None) -> torch.Tensor:
    """Torch reference of :func:`rope`: the runtime's eager formula, in x's dtype."""
    _check(x, cos, sin, out)
    if isinstance(positions, torch.Tensor):
        positions = positions.to(x.device)
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    y = x * cos[positions] + swapped * sin[positions]
    if out is None:
        return y
    out.copy_(y)
    return out
