"""Triton kernels against their fp32 torch references (CPU: Triton's interpreter; CUDA if the
process already imported triton for the GPU).

Tolerance, as in flash-attention's tests: kernel error vs the fp32 reference must be at most twice
the error of the same computation done by torch in the input precision, plus a small atol.
Outputs are poisoned (every fresh torch.empty is NaN); cache rows a kernel must not read are NaN.
Small odd sizes: context 1, 3, 19, 1177; GQA groups 1, 2, 4; ragged batches; forced split-K paths.
"""
import pytest
import torch

from kernel_checks import ATOL, assert_close, poison  # noqa: F401 (autouse fixture)
from kernel_small import (DEVICE, DTYPES, GROUPS, check_dense, make_kv, rand, seq,
                          small_blocks)  # noqa: F401 (fixture)
from kvsim.kernels import _common, decode, gather
from kvsim.kernel_contract import split_count


# ---------------------------------------------------------------- dense decode
# (dtype, lens, num_splits): single contexts 1, 3, 19 and a ragged batch, one split or several
DENSE_CASES = ([(torch.bfloat16, [n], s) for n in (1, 3, 19) for s in (None, 3)]
               + [(dt, [19, 1, 3, 40], s) for dt in DTYPES for s in (None, 1, 3)])


@pytest.mark.parametrize("dtype,lens,num_splits", DENSE_CASES)
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_decode_small(small_blocks, dtype, H, Hkv, lens, num_splits):
    torch.manual_seed(0)
    d = 32
    q = rand(len(lens), H, d, dtype=dtype)
    k, v = make_kv(len(lens), Hkv, max(lens) + 3, d, lens, dtype)
    check_dense(q, k, v, seq(lens), num_splits=num_splits)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,Hkv,num_splits", [(4, 4, None), (8, 2, 1), (4, 2, 7)])
def test_decode_1177(dtype, H, Hkv, num_splits):
    torch.manual_seed(1)
    d = 64
    q = rand(1, H, d, dtype=dtype)
    k, v = make_kv(1, Hkv, 1200, d, [1177], dtype)
    check_dense(q, k, v, seq([1177]), num_splits=num_splits, scale=0.1)


def test_decode_uses_split_count(monkeypatch):
    seen = {}
    real = decode.run_attention
    monkeypatch.setattr(decode, "run_attention",
                        lambda *a, **kw: seen.setdefault("splits", kw["splits"]) and real(*a, **kw))
    q = rand(2, 4, 32, dtype=torch.float16)
    k, v = make_kv(2, 2, 700, 32, [300, 700], torch.float16)
    decode.decode_attention(q, k, v, seq([300, 700]))
    assert seen["splits"] == int(split_count(2, 2, 700)) == 3


def test_bad_shapes_are_reported():
    q = rand(1, 6, 32, dtype=torch.float16)
    k, v = make_kv(1, 4, 8, 32, [8], torch.float16)
    with pytest.raises(ValueError, match="multiple of Hkv"):
        decode.decode_attention(q, k, v, seq([8]))


# ---------------------------------------------------------------- windowed decode
def window_kv(B, Hkv, S_max, d, lens, dtype, sink, recent, full):
    """Rows outside each streaming head's window are NaN: the kernel must not read them."""
    k, v = make_kv(B, Hkv, S_max, d, lens, dtype)
    for b, n in enumerate(lens):
        for h in range(Hkv):
            if not full[h] and sink + recent < n:
                k[b, h, sink:n - recent] = float("nan")
                v[b, h, sink:n - recent] = float("nan")
    return k, v


@pytest.mark.parametrize("dtype,num_splits,mixed", [(torch.bfloat16, 2, True),
                                                   (torch.float16, 2, True),
                                                   (torch.bfloat16, None, False)])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_windowed(small_blocks, dtype, H, Hkv, num_splits, mixed):
    torch.manual_seed(2)
    lens, d, sink, recent = [19, 3, 70], 32, 4, 21
    full = [h % 2 == 0 for h in range(Hkv)] if mixed else [False] * Hkv
    head_is_full = torch.tensor(full, device=DEVICE) if mixed else None
    q = rand(len(lens), H, d, dtype=dtype)
    k, v = window_kv(len(lens), Hkv, 75, d, lens, dtype, sink, recent, full)
    args = (q, k, v, seq(lens), sink, recent, head_is_full)
    o = decode.windowed_decode_attention(*args, num_splits=num_splits)
    ref = decode.windowed_decode_attention_ref(*args, out_dtype=torch.float32)
    ref_lp = decode.windowed_decode_attention_ref(*args, compute_dtype=dtype)
    assert_close(o, ref, ref_lp)


@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_windowed_full_budget_is_dense(small_blocks, H, Hkv):
    torch.manual_seed(3)
    lens, d = [19, 1, 50], 32
    q = rand(3, H, d, dtype=torch.bfloat16)
    k, v = make_kv(3, Hkv, 50, d, lens, torch.bfloat16)
    dense = decode.decode_attention(q, k, v, seq(lens), num_splits=2)
    wide = decode.windowed_decode_attention(q, k, v, seq(lens), 10, 40, num_splits=2)
    allfull = torch.ones(Hkv, dtype=torch.bool, device=DEVICE)
    full = decode.windowed_decode_attention(q, k, v, seq(lens), 2, 3, allfull, num_splits=2)
    assert torch.equal(dense, wide) and torch.equal(dense, full)


# ---------------------------------------------------------------- gathered decode
def shuffled_lists(B, Hsel, lens_per, K):
    """indices[B,Hsel,K]: a random permutation of rows < lens_per[b][h]; tail garbage."""
    idx = torch.full((B, Hsel, K), 10 ** 6, dtype=torch.int32)
    for b in range(B):
        for h in range(Hsel):
            n = lens_per[b][h]
            idx[b, h, :n] = torch.randperm(n).int()
    return idx.to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,Hkv", GROUPS)
@pytest.mark.parametrize("num_splits", [None, 3])  # None: split_count gives 1 here
def test_gather_all_rows_is_dense(small_blocks, dtype, H, Hkv, num_splits):
    torch.manual_seed(4)
    lens, d = [19, 1, 3, 45], 32
    B, S = len(lens), 45
    q = rand(B, H, d, dtype=dtype)
    k, v = make_kv(B, Hkv, S, d, lens, dtype)
    idx = shuffled_lists(B, Hkv, [[n] * Hkv for n in lens], S)
    counts = seq(lens)[:, None].repeat(1, Hkv)
    o, lse = gather.gathered_decode_attention(q, k, v, idx, counts, return_lse=True,
                                              num_splits=num_splits)
    ref, lse_ref = gather.gathered_decode_attention_ref(q, k, v, idx, counts, return_lse=True,
                                                       out_dtype=torch.float32)
    ref_lp = gather.gathered_decode_attention_ref(q, k, v, idx, counts, compute_dtype=dtype)
    assert_close(o, ref, ref_lp)
    assert torch.allclose(lse, lse_ref, atol=1e-4, rtol=1e-5)
    dense = decode.decode_attention(q, k, v, seq(lens), num_splits=num_splits)
    assert_close(o, dense, ref_lp, atol=2 * ATOL)  # same function, other row order


@pytest.mark.parametrize("dtype,num_splits", [(torch.bfloat16, None), (torch.bfloat16, 2),
                                              (torch.float16, 2)])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_gather_per_query_head(small_blocks, dtype, H, Hkv, num_splits):
    """TidalDecode-style lists: one per query head, of different lengths (1 to 40)."""
    torch.manual_seed(5)
    B, S, d = 2, 60, 32
    lens = [60, 41]
    q = rand(B, H, d, dtype=dtype)
    k, v = make_kv(B, Hkv, S, d, lens, dtype)
    counts = torch.randint(1, 41, (B, H), dtype=torch.int32)
    counts[0, 0] = 1
    idx = torch.full((B, H, 40), -7, dtype=torch.int32)
    for b in range(B):
        for h in range(H):
            idx[b, h, :counts[b, h]] = torch.randperm(lens[b])[:counts[b, h]].int()
    idx, counts = idx.to(DEVICE), counts.to(DEVICE)
    o, lse = gather.gathered_decode_attention(q, k, v, idx, counts, return_lse=True,
                                              num_splits=num_splits, scale=0.3)
    ref, lse_ref = gather.gathered_decode_attention_ref(q, k, v, idx, counts, return_lse=True,
                                                       out_dtype=torch.float32, scale=0.3)
    ref_lp = gather.gathered_decode_attention_ref(q, k, v, idx, counts, compute_dtype=dtype,
                                                  scale=0.3)
    assert_close(o, ref, ref_lp)
    assert torch.allclose(lse, lse_ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("H,Hkv", GROUPS)
@pytest.mark.parametrize("num_splits", [None, 3])
def test_gather_pages_equals_their_rows(small_blocks, H, Hkv, num_splits):
    """Quest's page lists read in place (page_size 4, per query head, the last page partial)
    against the same lists expanded to rows, and against the fp32 reference."""
    torch.manual_seed(6)
    B, S, d, P = 2, 64, 32, 4
    q = rand(B, H, d, dtype=torch.bfloat16)
    k, v = make_kv(B, Hkv, S, d, [S, S], torch.bfloat16)
    pages = torch.stack([torch.randperm(S // P)[:5] for _ in range(B * H)]).reshape(B, H, 5).int().to(DEVICE)
    counts = torch.full((B, H), 4 * P + 3, dtype=torch.int32, device=DEVICE)  # 4 pages + 3 rows of the 5th
    got = gather.gathered_decode_attention(q, k, v, pages, counts, num_splits=num_splits, page_size=P)
    rows = gather.pages_to_rows(pages, P)
    want = gather.gathered_decode_attention(q, k, v, rows, counts, num_splits=num_splits)
    ref = gather.gathered_decode_attention_ref(q, k, v, pages, counts, page_size=P, out_dtype=torch.float32)
    ref_lp = gather.gathered_decode_attention_ref(q, k, v, rows, counts, compute_dtype=torch.bfloat16)
    assert torch.equal(got, want)
    assert_close(got, ref, ref_lp)


# ---------------------------------------------------------------- tuning table
def test_configs_and_candidates():
    assert set(_common.CANDIDATES) == set(_common.CONFIGS)
    for kind, cands in _common.CANDIDATES.items():
        assert all(set(c) == set(_common.CONFIGS[kind]) for c in cands)
        assert _common.CONFIGS[kind] in cands, kind
    old = _common.set_config("attention", BLOCK_N=128)
    assert _common.CONFIGS["attention"]["BLOCK_N"] == 128
    _common.CONFIGS["attention"] = old
    with pytest.raises(KeyError):
        _common.set_config("attention", BLOCK_M=1)
