"""kernels/rope.py (RoPE as one kernel) against RoPE computed in float64 from the upcast inputs,
on odd sizes: int and tensor positions (broadcast), strided inputs (a split of a fused
projection), strided outputs (cache rows, a permuted layout), up to four leading dims.
CPU: Triton's interpreter (or CUDA when the process has it)."""
import pytest
import torch

from kernel_small import DEVICE
from kvsim.kernels.rope import rope, rope_ref

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def tables(positions: int, d: int, dtype):
    inv = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv[None]
    cos = torch.cat([angles.cos()] * 2, -1)
    sin = torch.cat([-angles.sin(), angles.sin()], -1)
    return cos.to(DEVICE, dtype), sin.to(DEVICE, dtype)


def exact(x, pos, cos, sin):
    """float64 RoPE: pairs (i, i + d/2) rotated by the angle of their position."""
    x, cos, sin = x.double(), cos.double(), sin.double()
    half = x.shape[-1] // 2
    return x * cos[pos] + torch.cat([x[..., half:], x[..., :half]], -1) * sin[pos]


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def close(got, want, dtype):
    err = (got.double() - want).norm() / want.norm()
    assert torch.isfinite(got).all() and err < TOL[dtype], float(err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 48])
def test_int_position(dtype, d):
    cos, sin = tables(300, d, dtype)
    x = torch.randn(3, 5, d, device=DEVICE).to(dtype)
    close(rope(x, 257, cos, sin), exact(x, 257, cos, sin), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tensor_positions_broadcast_over_heads(dtype):
    cos, sin = tables(97, 32, dtype)
    x = torch.randn(2, 7, 3, 32, device=DEVICE).to(dtype)  # [B, T, H, d]
    pos = torch.randint(0, 97, (2, 7, 1), device=DEVICE)
    close(rope(x, pos, cos, sin), exact(x, pos, cos, sin), dtype)
    prompt = torch.randn(2, 3, 11, 32, device=DEVICE).to(dtype)  # [B, Hkv, n, d] at 0..n-1
    arange = torch.arange(11, device=DEVICE)
    close(rope(prompt, arange, cos, sin), exact(prompt, arange, cos, sin), dtype)


def test_strided_input_and_output_views():
    """q out of a fused projection, written into a permuted row order; k into cache rows."""
    cos, sin = tables(50, 32, torch.float32)
    B, T, Hkv, G, d = 2, 3, 2, 3, 32
    qkv = torch.randn(B, T, (Hkv * G + 2 * Hkv) * d, device=DEVICE)
    q = qkv[..., : Hkv * G * d].reshape(B, T, Hkv * G, d)
    k = qkv[..., Hkv * G * d: (Hkv * G + Hkv) * d].reshape(B, T, Hkv, d)
    pos = torch.randint(0, 50, (B, T), device=DEVICE)
    rows = poisoned((B, Hkv * T * G, d), torch.float32)
    rope(q.unflatten(2, (Hkv, G)), pos[..., None, None], cos, sin, out=rows.view(B, Hkv, T, G, d).transpose(1, 2))
    want = exact(q, pos[..., None], cos, sin).reshape(B, T, Hkv, G, d).transpose(1, 2).reshape(B, -1, d)
    close(rows, want, torch.float32)
    cache = poisoned((B, Hkv, 9, d), torch.float32)
    rope(k, pos[..., None], cos, sin, out=cache[:, :, 4:4 + T].transpose(1, 2))
    close(cache[:, :, 4:4 + T], exact(k, pos[..., None], cos, sin).transpose(1, 2), torch.float32)
    assert torch.isnan(cache[:, :, :4]).all() and torch.isnan(cache[:, :, 4 + T:]).all()  # nothing else


def test_bf16_values_equal_the_eager_formula():
    """Each product rounded before the sum, as torch does: the very values of the reference."""
    cos, sin = tables(400, 64, torch.bfloat16)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(4, 9, 64, generator=gen).to(DEVICE, torch.bfloat16)
        pos = torch.randint(0, 400, (4, 9), generator=gen).to(DEVICE)
        assert torch.equal(rope(x, pos, cos, sin), rope_ref(x, pos, cos, sin))
        assert torch.equal(rope(x, 399, cos, sin), rope_ref(x, 399, cos, sin))


def test_reference_is_the_eager_formula_and_bad_shapes_say_so():
    cos, sin = tables(20, 16, torch.float32)
    x = torch.randn(4, 16, device=DEVICE)
    close(rope_ref(x, 5, cos, sin), exact(x, 5, cos, sin), torch.float32)
    with pytest.raises(ValueError, match="leading dims"):
        rope(torch.randn(1, 1, 1, 1, 1, 16, device=DEVICE), 0, cos, sin)
    with pytest.raises(ValueError, match="tables"):
        rope(torch.randn(2, 8, device=DEVICE), 0, cos, sin)
    with pytest.raises(ValueError, match="broadcast"):
        rope(x, torch.zeros(1, 1, 4, dtype=torch.long, device=DEVICE), cos, sin)
