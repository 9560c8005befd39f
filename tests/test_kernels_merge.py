"""Attention over pieces of the rows merged by log-sum-exp (kernels/decode.py merge_partials), as
runtime/cache.py reads an offloaded cache (a host block, then ring slices), against attention
over the concatenated rows; decode_attention's lse against its reference. CPU: Triton's
interpreter; small odd sizes."""
import pytest
import torch

from kernel_checks import assert_close, poison  # noqa: F401 (autouse fixture)
from kernel_small import GROUPS, make_kv, rand, seq, small_blocks  # noqa: F401 (fixture)
from kvsim.kernels import decode, scores


@pytest.mark.parametrize("lens,num_splits", [([19, 1, 3, 40], 3), ([19, 1, 3, 40], 1), ([7], None)])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_decode_lse_matches_the_reference(small_blocks, H, Hkv, lens, num_splits):
    torch.manual_seed(3)
    q = rand(len(lens), H, 32, dtype=torch.bfloat16)
    k, v = make_kv(len(lens), Hkv, max(lens) + 3, 32, lens, torch.bfloat16)
    o, lse = decode.decode_attention(q, k, v, seq(lens), num_splits=num_splits, return_lse=True)
    ref_o, ref_lse = decode.decode_attention_ref(q, k, v, seq(lens), out_dtype=torch.float32, return_lse=True)
    lp_o, lp_lse = decode.decode_attention_ref(q, k, v, seq(lens), compute_dtype=q.dtype, return_lse=True)
    assert lse.dtype == torch.float32 and lse.shape == (len(lens), H)
    assert_close(o, ref_o, lp_o)
    assert_close(lse, ref_lse, lp_lse)


def pieces(k, v, first, ring):
    """Rows [0, n) of k, v [B,Hkv,n,d] as the offloaded cache holds them: rows [0, first) as a
    movedim view of a [rows, B, Hkv, d] block (none if first == 0), the rest in a ring of
    ``ring`` slots (slot = position mod ring), returned as the ring's slot ranges in position
    order (two where the positions wrap)."""
    n = k.shape[2]
    out = []
    if first:
        out.append([t[:, :, :first].movedim(2, 0).contiguous().movedim(0, 2) for t in (k, v)])
    slots = torch.arange(first, n, device=k.device) % ring
    rings = []
    for t in (k, v):
        r = torch.full((*t.shape[:2], ring, t.shape[3]), float("nan"), dtype=t.dtype, device=t.device)
        r[:, :, slots] = t[:, :, first:n]
        rings.append(r)
    start = first % ring
    for a, m in ((start, min(n - first, ring - start)), (0, n - first - (ring - start))):
        if m > 0:
            out.append([r[:, :, a:a + m] for r in rings])
    return out


# (rows, block rows, ring slots) -> 1 piece (no block, no wrap), 2 (block + ring), 3 (wrapped ring)
LAYOUTS = [((37, 0, 40), 1), ((37, 11, 40), 2), ((41, 13, 33), 3), ((300, 100, 230), 3)]


@pytest.mark.parametrize("layout,count", LAYOUTS)
@pytest.mark.parametrize("H,Hkv", [(4, 4), (6, 2)])
def test_merged_pieces_equal_attention_over_all_rows(small_blocks, H, Hkv, layout, count):
    torch.manual_seed(4)
    n, first, ring = layout
    q = rand(2, H, 32, dtype=torch.bfloat16)
    k, v = rand(2, Hkv, n, 32, dtype=torch.bfloat16), rand(2, Hkv, n, 32, dtype=torch.bfloat16)
    parts = pieces(k, v, first, ring)
    assert len(parts) == count
    outs, lses = zip(*(decode.decode_attention(q, pk, pv, seq([pk.shape[2]] * 2), num_splits=2, return_lse=True)
                       for pk, pv in parts))
    o, lse = decode.merge_partials(list(outs), list(lses), q.dtype, return_lse=True)
    ref_o, ref_lse = decode.decode_attention_ref(q, k, v, seq([n] * 2), out_dtype=torch.float32, return_lse=True)
    lp_o, lp_lse = decode.decode_attention_ref(q, k, v, seq([n] * 2), compute_dtype=q.dtype, return_lse=True)
    assert o.dtype == q.dtype
    assert_close(o, ref_o, lp_o)
    assert_close(lse, ref_lse, lp_lse)


@pytest.mark.parametrize("layout,count", LAYOUTS[1:3])
def test_merged_pieces_give_the_logits_in_position_order(small_blocks, layout, count):
    """With logits (TidalDecode's selection layers): each piece's logits, joined in position
    order, are the logits over all rows; the merged lse is theirs."""
    torch.manual_seed(5)
    n, first, ring = layout
    q = rand(2, 8, 32, dtype=torch.float32)
    k, v = rand(2, 2, n, 32), rand(2, 2, n, 32)
    runs = [scores.decode_attention_with_logits(q, pk, pv, seq([pk.shape[2]] * 2), num_splits=2)
            for pk, pv in pieces(k, v, first, ring)]
    o, lse = decode.merge_partials([r[0] for r in runs], [r[1] for r in runs], q.dtype, return_lse=True)
    logits = torch.cat([r[2] for r in runs], -1)
    ref_o, ref_lse, ref_logits = scores.decode_attention_with_logits_ref(q, k, v, seq([n] * 2))
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(o, ref_o, atol=1e-4, rtol=1e-4)


def test_merge_of_one_piece_is_the_piece():
    o, lse = torch.randn(3, 5, 16), torch.randn(3, 5)
    got, got_lse = decode.merge_partials([o], [lse], torch.float32, return_lse=True)
    torch.testing.assert_close(got, o)
    torch.testing.assert_close(got_lse, lse)
