"""The fused int8 append (kernels/int8_rows.py) against quantize_kv + indexing, bit for bit, on
odd sizes, under Triton's interpreter on CPU (or on CUDA)."""
import pytest
import torch

from kernel_checks import use_interpreter_without_gpu

use_interpreter_without_gpu()

from kvsim.kernels import int8_rows  # noqa: E402
from kvsim.kernels._common import interpreting  # noqa: E402

DEVICE = "cpu" if interpreting() else "cuda"


def cache(B, Hkv, S, d):
    q = [torch.randint(-128, 128, (B, Hkv, S, d), dtype=torch.int8, device=DEVICE) for _ in range(2)]
    sz = [torch.randn(B, Hkv, S, device=DEVICE).half() for _ in range(4)]
    return q + sz  # kq, vq, ks, kz, vs, vz


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("per_seq", [False, True])
@pytest.mark.parametrize("d", [32, 48])
def test_put_matches_quantize_kv(dtype, per_seq, d):
    torch.manual_seed(21)
    B, Hkv, S = 3, 2, 11
    got, want = cache(B, Hkv, S, d), None
    want = [t.clone() for t in got]
    k_new = (torch.randn(B, Hkv, d, device=DEVICE) * 3 + 1).to(dtype)
    v_new = torch.randn(B, Hkv, d, device=DEVICE).to(dtype)
    v_new[1, 0] = 0.25  # a constant row: the smallest scale
    k_new[2, 1, :5] = torch.tensor([0.5, 1.5, 2.5, -0.5, 100.0])  # ties of x/scale are likely
    slot = torch.tensor([4, 0, 10], device=DEVICE) if per_seq else 7
    int8_rows.put_rows_int8(*got, slot, k_new, v_new)
    int8_rows.put_rows_int8_ref(*want, slot, k_new, v_new)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_strided_cache_views_and_bad_shapes():
    torch.manual_seed(22)
    B, Hkv, S, d = 2, 3, 9, 16
    big = cache(B, Hkv, S + 4, d)
    got = [t[:, :, 2:2 + S] for t in big]  # views: row stride kept, offset rows
    want = [t.clone() for t in got]
    k_new, v_new = torch.randn(B, Hkv, d, device=DEVICE), torch.randn(B, Hkv, d, device=DEVICE)
    int8_rows.put_rows_int8(*got, 3, k_new, v_new)
    int8_rows.put_rows_int8_ref(*want, 3, k_new, v_new)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    with pytest.raises(ValueError, match="k_new"):
        int8_rows.put_rows_int8(*got, 3, k_new[:, :2], v_new)
