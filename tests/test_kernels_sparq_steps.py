"""kvsim/methods/sparq/kernels_steps.py against its torch references: step 1 (top-r components of |q|, ties to
the lower component, and τ) and steps 4+6 (α over i2 and the mix with the mean of V).
CPU: Triton's interpreter (or CUDA when the process has it)."""
import pytest
import torch

from kernel_small import DEVICE, GROUPS
from kvsim.methods.sparq.kernels_steps import sparq_components, sparq_components_ref, sparq_mix, sparq_mix_ref


@pytest.mark.parametrize("H,Hkv", GROUPS + [(32, 8)])
@pytest.mark.parametrize("r,d", [(4, 32), (16, 128), (1, 64), (64, 64)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_components_and_tau(H, Hkv, r, d, dtype):
    torch.manual_seed(r + d + H)
    q = torch.randn(3, H, d, device=DEVICE).to(dtype)
    i1, tau = sparq_components(q, Hkv, r)
    want_i1, want_tau = sparq_components_ref(q, Hkv, r)
    assert i1.dtype == torch.int32 and i1.shape == (3, Hkv, r)
    assert torch.equal(i1.sort(-1).values, want_i1.sort(-1).values)
    torch.testing.assert_close(tau, want_tau, rtol=1e-5, atol=1e-6)


def test_ties_go_to_the_lower_component():
    q = torch.ones(1, 4, 32, device=DEVICE)  # every component ties
    i1, tau = sparq_components(q, 2, 5)
    assert i1.tolist() == [[[0, 1, 2, 3, 4]] * 2]
    torch.testing.assert_close(tau, torch.full((1, 4), (32 * 5 / 32) ** 0.5, device=DEVICE))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple"):
        sparq_components(torch.randn(1, 6, 32, device=DEVICE), 4, 2)
    with pytest.raises(ValueError, match="r <= d"):
        sparq_components(torch.randn(1, 4, 32, device=DEVICE), 2, 33)


@pytest.mark.parametrize("H,Hkv,k,block", [(8, 2, 7, None), (4, 4, 1500, None), (32, 8, 64, None),
                                            (2, 1, 2500, None), (4, 2, 1500, 512)])
def test_mix(H, Hkv, k, block, monkeypatch):
    """One block of i2 (up to MIX_BLOCK, 8 warps past 2048), or several (MIX_BLOCK cut to 512)."""
    if block:
        monkeypatch.setattr("kvsim.methods.sparq.kernels_steps.MIX_BLOCK", block)
    torch.manual_seed(k)
    B, d, n = 2, 32, max(1900, k + 100)
    S = n + 100
    y = torch.randn(B, H, d, device=DEVICE).to(torch.bfloat16)
    s_hat = torch.softmax(torch.randn(B, H, S, device=DEVICE), -1)
    i2 = torch.stack([torch.randperm(n)[:k] for _ in range(B * Hkv)]).reshape(B, Hkv, k).to(DEVICE)
    v_sum = torch.randn(B, Hkv, d, device=DEVICE) * n
    got = sparq_mix(y, s_hat, i2, v_sum, n)
    want = sparq_mix_ref(y, s_hat, i2, v_sum, n)
    assert got.dtype == y.dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -7, atol=1e-3)
    got32 = sparq_mix(y, s_hat, i2.int(), v_sum, n)  # int32 indices too
    torch.testing.assert_close(got32, got)
