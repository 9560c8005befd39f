"""kernels/rows.py (a K and a V row per sequence at its own slot, one launch) against torch's
advanced-index put: strided sources (a cache row, a token of a projection), nothing else
touched. CPU: Triton's interpreter (or CUDA when the process has it)."""
import pytest
import torch

from kernel_small import DEVICE
from kvsim.kernels.rows import put_rows, put_rows_ref


@pytest.mark.parametrize("dtype,d", [(torch.bfloat16, 64), (torch.float32, 48)])
def test_put_rows_matches_reference(dtype, d):
    gen = torch.Generator().manual_seed(d)
    B, H, S, T = 3, 5, 37, 4
    k = torch.randn(B, H, S, d, generator=gen).to(DEVICE, dtype)
    v = torch.randn(B, H, S, d, generator=gen).to(DEVICE, dtype)
    chunk = torch.randn(B, T, H, d, generator=gen).to(DEVICE, dtype)  # e.g. a projection's tokens
    slots = torch.tensor([0, 36, 17], device=DEVICE)
    want_k, want_v = k.clone(), v.clone()
    put_rows_ref(want_k, want_v, slots, k[:, :, 30], chunk[:, -1])
    put_rows(k, v, slots, k[:, :, 30], chunk[:, -1])  # a cache row of its own and a strided token
    assert torch.equal(k, want_k) and torch.equal(v, want_v)
    assert torch.equal(v[torch.arange(B), :, slots], chunk[:, -1])


def test_bad_shapes_say_so():
    k = torch.zeros(2, 3, 8, 16, device=DEVICE)
    with pytest.raises(ValueError, match="want k, v"):
        put_rows(k, k.clone(), torch.zeros(3, dtype=torch.long, device=DEVICE), k[:, :, 0], k[:, :, 0])
