"""kvsim/methods/adore/kernels.py (ADORE's token score: position encoding, MLP and sigmoid in one launch)
against the eager controller formula in float64 and its torch reference; written into a
strided column of a score table, nothing else touched. CPU: Triton's interpreter (or CUDA)."""
import pytest
import torch

from kernel_small import DEVICE
from kvsim.methods.adore.kernels import adore_release, adore_release_ref, adore_score, adore_score_ref


def controller(hid=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hid, hid, generator=gen) * hid ** -0.5
    w2 = torch.randn(1, hid, generator=gen) * hid ** -0.5
    freq = 10000.0 ** (-2 * torch.arange(hid // 2, dtype=torch.float32) / hid)
    return freq, w1, w2


def exact(z, pos, freq, w1, w2):
    angle = (pos.float()[:, None] * freq).double()  # the fp32 angle torch forms, then exact math
    u = z.double() + torch.cat([angle.sin(), angle.cos()], -1)
    return torch.sigmoid(torch.relu(u @ w1.double().T) @ w2.double().T)[:, 0]


def test_score_matches_the_controller_formula():
    freq, w1, w2 = (t.to(DEVICE) for t in controller())
    z = torch.randn(5, 64, device=DEVICE)
    pos = torch.tensor([0, 1, 77, 4095, 131071], device=DEVICE, dtype=torch.int32)
    table = torch.full((5, 300), -7.0, device=DEVICE)
    adore_score(z, pos, freq, w1, w2, table[:, 123])
    assert torch.allclose(table[:, 123].double(), exact(z, pos, freq, w1, w2), atol=1e-5)
    assert (table[:, :123] == -7).all() and (table[:, 124:] == -7).all()  # that column only
    ref = adore_score_ref(z, pos, freq, w1, w2, torch.empty(5, device=DEVICE))
    assert torch.allclose(ref, table[:, 123], atol=1e-5)


def test_bf16_weights_stay_close():
    freq, w1, w2 = controller(seed=1)
    freq, w1, w2 = freq.to(DEVICE), w1.to(DEVICE, torch.bfloat16), w2.to(DEVICE, torch.bfloat16)
    z = torch.randn(3, 64, device=DEVICE).to(torch.bfloat16)
    pos = torch.tensor([5, 600, 9000], device=DEVICE)
    got = adore_score(z, pos, freq, w1, w2, torch.empty(3, device=DEVICE))
    ref = adore_score_ref(z, pos, freq, w1, w2, torch.empty(3, device=DEVICE))
    assert torch.allclose(got, ref, atol=2e-2)  # torch rounds z + p and the hidden layer to bf16


def release_state(B=3, m=37, S=120, n=100, seed=0, ties=False):
    gen = torch.Generator().manual_seed(seed)
    score = torch.rand(B, S, generator=gen)
    if ties:
        score = (score * 3).floor()  # many equal scores: the lowest slot wins, as torch.argmin
    k_pos = torch.full((B, m + 5), -1, dtype=torch.int32)
    k_pos[:, :m] = torch.stack([torch.randperm(n, generator=gen)[:m] for _ in range(B)]).int()
    slot_score = score.gather(1, k_pos[:, :m].long())
    released = torch.ones(B, S, dtype=torch.bool)
    released[:, n:] = False
    released.scatter_(1, k_pos[:, :m].long(), False)
    rebuild = score.masked_fill(~released, float("-inf"))  # finite: released
    insert = slot_score.argmin(-1)
    return [t.to(DEVICE) for t in (k_pos, slot_score, rebuild, score, insert)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("m", [37, 1500])  # one block of slots, or two (BLOCK 1024)
def test_release_matches_reference(ties, m):
    want, got = release_state(m=m, S=2000, n=1900, ties=ties), release_state(m=m, S=2000, n=1900, ties=ties)
    for state, fn in ((want, adore_release_ref), (got, adore_release)):
        k_pos, slot_score, rebuild, score, insert = state
        before = k_pos[:, :m].gather(1, insert[:, None].int().long()).clone()
        fn(k_pos[:, :m], slot_score, rebuild, score, insert, 1900)
    for w, g in zip(want, got):
        assert torch.equal(w, g)
    k_pos, slot_score, rebuild, score, insert = got
    released = torch.isfinite(rebuild)
    assert (k_pos[:, :m] == 1900).sum(1).eq(1).all()  # the new token holds exactly one slot
    assert released.gather(1, before.long()).all() and (k_pos[:, m:] == -1).all()
