"""Shared by the kernel tests (CPU under Triton's interpreter, and tests/gpu): interpreter
set-up, poisoned allocations, NaN-padded caches, and the flash-attention-style tolerance: kernel
error vs the fp32 reference at most twice the same-precision torch error, plus a small atol."""
import os
import sys

import pytest
import torch

ATOL = 2.0 ** -10


def use_interpreter_without_gpu() -> None:
    """On a CPU, run Triton's interpreter; redo triton's import if it was made without it.
    Must run before the first import of kernels."""
    if torch.cuda.is_available():
        return
    os.environ["TRITON_INTERPRET"] = "1"
    from kvsim.kernels._common import interpreting
    if interpreting():
        return
    for name in list(sys.modules):  # triton and every module of kernels (shared or a method's own)
        kernel_module = name.split(".")[0] in ("triton", "kernels") or ".kernels" in name
        if kernel_module and "._C" not in name:
            del sys.modules[name]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every float tensor from torch.empty/empty_like starts as NaN, ints as a huge value."""
    real_empty, real_like = torch.empty, torch.empty_like

    def fill(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype != torch.bool:
            t.fill_(torch.iinfo(t.dtype).max)
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_like(*a, **k)))
    yield
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def padded_kv(rand, B, Hkv, S_max, d, lens, dtype, pad):
    """K and V as strided views of a cache ``pad`` rows bigger; rows at or beyond seq_len are NaN."""
    k = rand(B, Hkv, S_max + pad, d, dtype=dtype)[:, :, :S_max]
    v = rand(B, Hkv, S_max + pad, d, dtype=dtype)[:, :, :S_max]
    for b, n in enumerate(lens):
        k[b, :, n:] = float("nan")
        v[b, :, n:] = float("nan")
    return k, v


def assert_close(out, ref32, ref_lp, atol=ATOL):
    """|out − ref32| ≤ 2·|ref_lp − ref32| + atol (max over elements); nothing NaN."""
    out, ref32, ref_lp = out.float(), ref32.float(), ref_lp.float()
    assert torch.isfinite(out).all(), "unwritten or NaN output"
    err = (out - ref32).abs().max().item()
    base = (ref_lp - ref32).abs().max().item()
    assert err <= 2 * base + atol, f"kernel error {err:.3g} > 2 x torch error {base:.3g} + {atol}"
