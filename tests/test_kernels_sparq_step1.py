"""kernels/sparq_step1.py (SparQ's top-r components of |q| and τ in one launch) against its torch
reference: the same component set (ties to the lower component), the same τ.
CPU: Triton's interpreter (or CUDA when the process has it)."""
import pytest
import torch

from kernel_small import DEVICE, GROUPS
from kernels.sparq_step1 import sparq_components, sparq_components_ref


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
