"""The GPU-side gather of offloaded rows (kernels/host_gather.py) against torch indexing, on odd
sizes, under Triton's interpreter on CPU (host memory there, as pinned memory is on a GPU)."""
import pytest
import torch

from kernel_checks import use_interpreter_without_gpu

use_interpreter_without_gpu()

from kvsim.kernels import host_gather  # noqa: E402
from kvsim.kernels._common import interpreting  # noqa: E402

DEVICE = "cpu" if interpreting() else "cuda"


def layout(B, Hkv, S, tail, dtype, fraction):
    """A position-ordered field split as runtime/offload.py does: (host, dev, boundary, ring, full)."""
    full = torch.randn(B, Hkv, S, *tail).mul(40).to(dtype)
    boundary = int(fraction * S)
    ring = S - boundary + 1
    host = full[:, :, :boundary].movedim(2, 0).contiguous()
    if DEVICE == "cuda":
        host = host.pin_memory()
    dev = torch.zeros(B, Hkv, ring, *tail, dtype=dtype)
    for p in range(boundary, S):
        dev[:, :, p % ring] = full[:, :, p]
    return host, dev.to(DEVICE), boundary, full.to(DEVICE)


@pytest.mark.parametrize("tail,dtype", [((32,), torch.bfloat16), ((24,), torch.int8), ((), torch.float16)])
@pytest.mark.parametrize("Hsel_per_kv", [1, 3])
@pytest.mark.parametrize("fraction", [0.0, 0.45, 1.0])
def test_gather_matches_indexing(tail, dtype, Hsel_per_kv, fraction):
    torch.manual_seed(11)
    B, Hkv, S, K = 3, 2, 37, 19
    host, dev, boundary, full = layout(B, Hkv, S, tail, dtype, fraction)
    Hsel = Hkv * Hsel_per_kv
    idx = torch.stack([torch.stack([torch.randperm(S)[:K] for _ in range(Hsel)]) for _ in range(B)])
    idx = idx.int().to(DEVICE)
    count, ref_count = (torch.full((), 5, dtype=torch.int64, device=DEVICE) for _ in range(2))
    got = host_gather.gather_host_rows(host, dev, idx, boundary, count=count)
    want = host_gather.gather_host_rows_ref(host, dev, idx, boundary, count=ref_count)
    assert int(count) == int(ref_count) == 5 + int((idx < boundary).sum())
    kvh = torch.arange(Hsel, device=DEVICE) // Hsel_per_kv
    truth = full[torch.arange(B, device=DEVICE)[:, None, None], kvh[None, :, None], idx.long()]
    assert got.shape == (B, Hsel, K, *tail) and got.dtype == dtype
    assert torch.equal(got, truth) and torch.equal(want, truth)


def test_gather_into_a_staging_buffer_and_strided_indices():
    torch.manual_seed(12)
    B, Hkv, S, K = 2, 3, 29, 9
    host, dev, boundary, full = layout(B, Hkv, S, (16,), torch.float16, 0.6)
    idx = torch.randint(0, S, (B, K, Hkv), dtype=torch.int32, device=DEVICE).transpose(1, 2)
    staging = torch.full((B, Hkv, K, 16), float("nan"), dtype=torch.float16, device=DEVICE)
    out = host_gather.gather_host_rows(host, dev, idx, boundary, out=staging)
    truth = full[torch.arange(B, device=DEVICE)[:, None, None], torch.arange(Hkv, device=DEVICE)[None, :, None],
                 idx.long()]
    assert out is staging and torch.equal(out, truth)


def test_mismatched_layouts_are_refused():
    host, dev, boundary, _ = layout(2, 2, 10, (16,), torch.float16, 0.5)
    with pytest.raises(ValueError, match="does not match"):
        host_gather.gather_host_rows(host[:, :1].contiguous(), dev, torch.zeros(2, 2, 3, dtype=torch.int32), boundary)


@pytest.mark.parametrize("B,Hkv,ring,d", [(1, 1, 5, 3), (3, 2, 19, 24), (2, 3, 13, 17)])
def test_gather_from_a_rows_outer_arena_view(B, Hkv, ring, d):
    """Device rows as runtime/schedule_store.py lays them out: one arena, rows outer, K and V of a
    slot side by side ([ring, 2, B, Hkv, d]); the V view [B, Hkv, ring, d] is strided (no copy)."""
    torch.manual_seed(13)
    S, K = ring + 7, 11
    arena = torch.randn(ring * 2 * B * Hkv * d + 5).mul(40).to(torch.float16).to(DEVICE)
    v = arena[: ring * 2 * B * Hkv * d].view(ring, 2, B, Hkv, d)[:, 1].permute(1, 2, 0, 3)
    host = torch.randn(7, B, Hkv, d).to(torch.float16)
    host = (host.pin_memory() if DEVICE == "cuda" else host)
    idx = torch.randint(0, S, (B, Hkv, K), dtype=torch.int32, device=DEVICE)
    got = host_gather.gather_host_rows(host, v, idx, 7)
    want = host_gather.gather_host_rows_ref(host, v, idx, 7)
    pos, b = idx.long(), torch.arange(B, device=DEVICE)[:, None, None]
    h = torch.arange(Hkv, device=DEVICE)[None, :, None]
    truth = torch.where((pos < 7)[..., None], host.to(DEVICE)[pos.clamp(max=6), b, h], v[b, h, pos % ring])
    assert not v.is_contiguous() and torch.equal(got, truth) and torch.equal(want, truth)


def test_a_device_view_with_split_rows_is_refused():
    host, dev, boundary, _ = layout(2, 2, 10, (16,), torch.float16, 0.5)
    with pytest.raises(ValueError, match="each device row"):
        host_gather.gather_host_rows(host[..., :8].contiguous(), dev[..., ::2], torch.zeros(2, 2, 3, dtype=torch.int32),
                                     boundary)
