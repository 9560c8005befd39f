"""Attention that writes its logits, weight accumulation, and RoPE applied as keys load
(kernels/scores.py, kernels/decode.py rope_decode_attention) against fp32 torch references, on
small odd sizes, under Triton's interpreter on CPU (or on CUDA)."""
import pytest
import torch

from kernel_checks import assert_close, poison  # noqa: F401 (autouse fixture)
from kernel_small import DEVICE, GROUPS, make_kv, rand, seq, small_blocks  # noqa: F401 (fixture)
from kvsim.kernels import decode, scores
from kvsim.runtime.model import Rotary


def valid_logits(logits, lens):
    """Logits of rows below each sequence's count (the kernel leaves the rest unwritten)."""
    return [logits[b, :, :n] for b, n in enumerate(lens)]


@pytest.mark.parametrize("num_splits", [None, 1, 3])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_dense_logits_match_reference(small_blocks, H, Hkv, num_splits):
    torch.manual_seed(0)
    lens, d, dtype = [19, 1, 40], 32, torch.bfloat16
    q = rand(len(lens), H, d, dtype=dtype)
    k, v = make_kv(len(lens), Hkv, max(lens) + 3, d, lens, dtype)
    o, lse, logits = scores.decode_attention_with_logits(q, k, v, seq(lens), num_splits=num_splits)
    ro, rlse, rlogits = scores.decode_attention_with_logits_ref(q, k, v, seq(lens),
                                                                out_dtype=torch.float32)
    lp = decode.decode_attention_ref(q, k, v, seq(lens), compute_dtype=dtype)
    assert_close(o, ro, lp)
    for got, want in zip(valid_logits(logits, lens), valid_logits(rlogits, lens)):
        assert torch.allclose(got, want, atol=2e-2, rtol=1e-2)  # bf16 inputs, fp32 dot
    assert torch.allclose(lse, rlse, atol=2e-2)
    # weights exp(logit − lse) of a sequence sum to 1 per head
    for b, n in enumerate(lens):
        total = torch.exp(logits[b, :, :n] - lse[b, :, None]).sum(-1)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-4)


@pytest.mark.parametrize("per_query_head", [False, True])
def test_gathered_logits_follow_the_index_order(small_blocks, per_query_head):
    torch.manual_seed(1)
    B, H, Hkv, d, S, K = 2, 8, 2, 32, 50, 21
    dtype = torch.float16
    Hsel = H if per_query_head else Hkv
    q = rand(B, H, d, dtype=dtype)
    k, v = make_kv(B, Hkv, S, d, [S] * B, dtype)
    idx = torch.stack([torch.stack([torch.randperm(S)[:K] for _ in range(Hsel)]) for _ in range(B)])
    counts = torch.tensor([[K] * Hsel, [K - 5] * Hsel], dtype=torch.int32)
    idx, counts = idx.to(DEVICE).int(), counts.to(DEVICE)
    o, lse, logits = scores.decode_attention_with_logits(q, k, v, indices=idx, counts=counts,
                                                         num_splits=2)
    ro, rlse, rlogits = scores.decode_attention_with_logits_ref(q, k, v, indices=idx, counts=counts)
    assert torch.allclose(o.float(), ro.float(), atol=1e-2)
    assert torch.allclose(lse, rlse, atol=1e-2)
    for b, n in enumerate([K, K - 5]):
        assert torch.allclose(logits[b, :, :n], rlogits[b, :, :n], atol=1e-2)


@pytest.mark.parametrize("H,heads,indexed", [(6, 1, False), (8, 4, False), (12, 3, False), (8, 8, True),
                                             (32, 32, True)])
def test_accumulate_weights(H, heads, indexed):
    """Sets of 1 head (MHA H2O) or 3 (masked head tiles), 4, and all 8 or 32 heads indexed
    (ALISA: 128-row programs); n crosses the programs' row blocks."""
    torch.manual_seed(2)
    B, n, S = 3, 1100, 1300
    logits = torch.randn(B, H, n, device=DEVICE) * 3
    lse = torch.logsumexp(logits, -1) + torch.rand(B, H, device=DEVICE)
    counts = torch.tensor([n, 7, 600], dtype=torch.int32, device=DEVICE)
    if indexed:
        idx = torch.stack([torch.randperm(S)[:n] for _ in range(B)]).to(DEVICE).int()
        acc = torch.rand(B, S, device=DEVICE)
    else:
        idx, acc = None, torch.rand(B, H // heads, n + 9, device=DEVICE)
    assert scores.accumulate_block(heads)[0] < n  # more than one program per row range
    want = scores.accumulate_weights_ref(logits, lse, acc.clone(), counts, heads, idx)
    got = scores.accumulate_weights(logits, lse, acc.clone(), counts, heads, idx)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.equal(want, acc)  # the update did something


def test_accumulate_rejects_mismatched_shapes():
    logits, lse = torch.zeros(2, 4, 8), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="acc must be"):
        scores.accumulate_weights_ref(logits, lse, torch.zeros(2, 3, 8), torch.ones(2), 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_splits", [None, 3])
@pytest.mark.parametrize("H,Hkv", [(4, 4), (8, 2)])
def test_rope_on_load_equals_rotating_first(small_blocks, dtype, H, Hkv, num_splits):
    """Keys rotated as they load = keys rotated in fp32, then attended (shuffled positions)."""
    torch.manual_seed(3)
    lens, d = [37, 5], 32
    q = rand(len(lens), H, d, dtype=dtype)
    k, v = make_kv(len(lens), Hkv, max(lens) + 2, d, lens, dtype)
    rot = Rotary(d, 10000.0, 64, DEVICE, dtype=dtype)
    half = d // 2
    cos, sin = rot.cos[:, :half], rot.sin[:, half:]  # +sin lives in the second half
    positions = torch.randperm(k.shape[2], device=DEVICE)
    o = decode.rope_decode_attention(q, k, v, seq(lens), positions, cos, sin, num_splits=num_splits)
    ref = decode.rope_decode_attention_ref(q, k, v, seq(lens), positions, cos, sin,
                                           out_dtype=torch.float32)
    rotated = rot(k, positions)  # the runtime's own rotation, in the input precision
    lp = decode.decode_attention_ref(q, rotated, v, seq(lens), compute_dtype=dtype)
    assert_close(o, ref, lp)
    # and the rotation really happened: attention over the unrotated keys differs
    plain = decode.decode_attention_ref(q, k, v, seq(lens), out_dtype=torch.float32)
    assert (plain - ref).abs().max() > 1e-2


@pytest.mark.parametrize("num_splits", [None, 1, 3])
@pytest.mark.parametrize("Hkv,Q", [(2, 9 * 4), (4, 3), (1, 16)])
def test_positional_mask_matches_reference(small_blocks, Hkv, Q, num_splits):
    """ADORE's chunk: Q query rows per KV head, each seeing the cache rows whose position is at
    most its own; empty slots (−1) and rows past seq_len (NaN) never seen."""
    torch.manual_seed(4)
    B, d, S_max, lens = 2, 32, 60, [57, 20]
    q = rand(B, Hkv * Q, d, dtype=torch.bfloat16)
    k, v = make_kv(B, Hkv, S_max, d, lens, torch.bfloat16)
    k_pos = torch.stack([torch.randperm(200, device=DEVICE)[:S_max] for _ in range(B)])
    k_pos[:, ::7] = -1  # empty slots
    q_pos = torch.randint(0, 200, (B, Hkv * Q), device=DEVICE)
    q_pos[:, 0] = 0  # a row that may see nothing or one row
    o = decode.positional_decode_attention(q, k, v, seq(lens), q_pos, k_pos, num_splits=num_splits)
    ref = decode.positional_decode_attention_ref(q, k, v, seq(lens), q_pos, k_pos,
                                                 out_dtype=torch.float32)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.float(), ref, atol=2e-2, rtol=2e-2)  # bf16 probabilities
