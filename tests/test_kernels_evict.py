"""kvsim/methods/h2o/kernels.py (H2O's eviction + insertion in one launch) against its torch reference:
the same slot (ties: the lowest), the last `recent` positions never evicted, nothing else
touched. CPU: Triton's interpreter (or CUDA when the process has it)."""
import pytest
import torch

from kernel_small import DEVICE
from kvsim.methods.h2o.kernels import evict_insert, evict_insert_ref


def state(B=3, H=2, cap=1500, rows=1504, d=32, seed=0, ties=False):
    gen = torch.Generator().manual_seed(seed)
    acc = torch.rand(B, H, cap, generator=gen)
    if ties:
        acc = (acc * 4).floor()  # many equal scores
    slot_pos = torch.stack([torch.randperm(5000, generator=gen)[:cap] for _ in range(B * H)]).reshape(B, H, cap)
    k, v = torch.randn(B, H, rows, d, generator=gen), torch.randn(B, H, rows, d, generator=gen)
    new = torch.randn(2, B, H, d, generator=gen)
    return [t.to(DEVICE) for t in (acc, slot_pos, k, v, new[0], new[1])]


@pytest.mark.parametrize("cap", [1500, 4500])  # one 2048-slot step; two 4096-slot steps
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("recent", [0, 700, 4999])
def test_evict_insert_matches_reference(ties, recent, cap):
    want, got = state(ties=ties, cap=cap, rows=cap + 4), state(ties=ties, cap=cap, rows=cap + 4)
    evict_insert_ref(*want, pos=5000, recent=recent)
    evict_insert(*got, pos=5000, recent=recent)
    for w, g in zip(want, got):
        assert torch.equal(w, g)
    acc, slot_pos = got[0], got[1]
    assert ((slot_pos == 5000).sum(-1) == 1).all()  # one slot per (sequence, KV head) took it
    assert (acc[slot_pos == 5000] == 0).all()


def test_protected_slots_are_never_evicted():
    acc, slot_pos, k, v, kn, vn = state(seed=3)
    acc[..., :10] = -1.0  # the lowest scores ...
    slot_pos[..., :10] = 4990  # ... but among the last 20 positions
    before = slot_pos.clone()
    evict_insert(acc, slot_pos, k, v, kn, vn, pos=5000, recent=20)
    assert torch.equal(slot_pos[..., :10], before[..., :10])


def test_bad_shapes_are_refused():
    acc, slot_pos, k, v, kn, vn = state()
    with pytest.raises(ValueError, match="int64"):
        evict_insert(acc, slot_pos.int(), k, v, kn, vn, pos=1, recent=0)
    with pytest.raises(ValueError, match="new rows"):
        evict_insert(acc, slot_pos, k, v, kn[..., :16], vn, pos=1, recent=0)
