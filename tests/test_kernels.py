"""Triton kernels against their fp32 torch references (CPU: Triton's interpreter; CUDA if the
process already imported triton for the GPU).

Tolerance, as in flash-attention's tests: kernel error vs the fp32 reference must be at most twice
the error of the same computation done by torch in the input precision, plus a small atol.
Outputs are poisoned (every fresh torch.empty is NaN); cache rows a kernel must not read are NaN.
Small odd sizes: context 1, 3, 19, 1177; GQA groups 1, 2, 4; ragged batches; forced split-K paths.
"""
import os
import sys

import torch

if not torch.cuda.is_available():  # must precede the first import of triton
    os.environ["TRITON_INTERPRET"] = "1"


def _import_kernels():
    """Import the kernels; on a CPU, redo triton's import if it was made without the interpreter."""
    from kernels._common import interpreting
    if interpreting() or torch.cuda.is_available():
        return
    for name in list(sys.modules):
        top = name.split(".")[0]
        if top in ("triton", "kernels") and "._C" not in name:
            del sys.modules[name]


_import_kernels()

import pytest  # noqa: E402

from kernels import _common, decode, gather, int8kv, quest, sparq  # noqa: E402
from kvsim.methods.attention import split_count  # noqa: E402

DEVICE = "cpu" if _common.interpreting() else "cuda"
DTYPES = [torch.bfloat16, torch.float16]
GROUPS = [(4, 4), (4, 2), (8, 2)]  # (H, Hkv): G = 1, 2, 4
ATOL = 2.0 ** -10


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every float tensor from torch.empty/empty_like starts as NaN, ints as a huge value."""
    real_empty, real_like = torch.empty, torch.empty_like

    def fill(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype != torch.bool:
            t.fill_(torch.iinfo(t.dtype).max)
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_like(*a, **k)))


@pytest.fixture
def small_blocks():
    """Blocks of 16 rows/pages so small contexts cross blocks and splits."""
    olds = {kind: _common.set_config(kind, **{key: 16})
            for kind, key in [("attention", "BLOCK_N"), ("attention_int8", "BLOCK_N"),
                              ("sparq_logits", "BLOCK_S"), ("quest", "BLOCK_P"),
                              ("combine", "BLOCK_S")]}
    yield
    for kind, old in olds.items():
        _common.CONFIGS[kind] = old


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, device=DEVICE).to(dtype)


def make_kv(B, Hkv, S_max, d, lens, dtype, pad=5):
    """K and V as strided views of a bigger cache; rows at or beyond seq_len are NaN."""
    k = rand(B, Hkv, S_max + pad, d, dtype=dtype)[:, :, :S_max]
    v = rand(B, Hkv, S_max + pad, d, dtype=dtype)[:, :, :S_max]
    for b, n in enumerate(lens):
        k[b, :, n:] = float("nan")
        v[b, :, n:] = float("nan")
    return k, v


def seq(lens):
    return torch.tensor(lens, dtype=torch.int32, device=DEVICE)


def assert_close(out, ref32, ref_lp, atol=ATOL):
    """|out − ref32| ≤ 2·|ref_lp − ref32| + atol (max over elements); nothing NaN."""
    out, ref32, ref_lp = out.float(), ref32.float(), ref_lp.float()
    assert torch.isfinite(out).all(), "unwritten or NaN output"
    err = (out - ref32).abs().max().item()
    base = (ref_lp - ref32).abs().max().item()
    assert err <= 2 * base + atol, f"kernel error {err:.3g} > 2 x torch error {base:.3g} + {atol}"


def check_dense(q, k, v, lens, **kw):
    o = decode.decode_attention(q, k, v, lens, **kw)
    assert o.dtype == q.dtype and o.shape == q.shape
    scale = kw.get("scale")
    ref = decode.decode_attention_ref(q, k, v, lens, scale=scale, out_dtype=torch.float32)
    ref_lp = decode.decode_attention_ref(q, k, v, lens, scale=scale, compute_dtype=q.dtype)
    assert_close(o, ref, ref_lp)
    return o


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


# ---------------------------------------------------------------- int8 KV
def test_quantize_round_trip():
    torch.manual_seed(6)
    x = rand(3, 2, 19, 64) * 3
    x[0, 0, 0] = 1.25  # a constant row
    x[0, 0, 1] = x[0, 0, 1].abs() + 5  # all positive, far from 0
    xq, scale, zero = int8kv.quantize_kv(x.to(torch.bfloat16))
    assert xq.dtype == torch.int8 and scale.dtype == zero.dtype == torch.float16
    assert scale.shape == zero.shape == x.shape[:-1]
    back = int8kv.dequantize_kv(xq, scale, zero)
    err = (back - x.to(torch.bfloat16).float()).abs()
    assert (err <= 0.75 * scale.float()[..., None] + 1e-6).all()


@pytest.mark.parametrize("dtype,num_splits", [(torch.bfloat16, None), (torch.bfloat16, 3),
                                              (torch.float16, 3)])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_int8_decode(small_blocks, dtype, H, Hkv, num_splits):
    torch.manual_seed(7)
    lens, d = [19, 1, 3, 40], 32
    B = len(lens)
    q = rand(B, H, d, dtype=dtype)
    k, v = make_kv(B, Hkv, 40, d, [40] * B, dtype)
    kq, ks, kz = int8kv.quantize_kv(k)
    vq, vs, vz = int8kv.quantize_kv(v)
    for b, n in enumerate(lens):  # rows beyond seq_len: garbage scale/zero
        ks[b, :, n:], vz[b, :, n:] = float("nan"), float("nan")
    args = (q, kq, vq, ks, kz, vs, vz, seq(lens))
    o = int8kv.decode_attention_int8(*args, num_splits=num_splits)
    ref = int8kv.decode_attention_int8_ref(*args, out_dtype=torch.float32)
    ref_lp = int8kv.decode_attention_int8_ref(*args, compute_dtype=dtype)
    assert_close(o, ref, ref_lp)
    dense = decode.decode_attention_ref(q, k, v, seq(lens), out_dtype=torch.float32)
    assert (o.float() - dense).abs().max().item() < 0.06  # quantization error only


def test_int8_1177():
    torch.manual_seed(8)
    q = rand(1, 8, 64, dtype=torch.bfloat16)
    k, v = make_kv(1, 2, 1177, 64, [1177], torch.bfloat16)
    quant = int8kv.quantize_kv(k), int8kv.quantize_kv(v)
    (kq, ks, kz), (vq, vs, vz) = quant
    args = (q, kq, vq, ks, kz, vs, vz, seq([1177]))
    o = int8kv.decode_attention_int8(*args)
    assert_close(o, int8kv.decode_attention_int8_ref(*args, out_dtype=torch.float32),
                 int8kv.decode_attention_int8_ref(*args, compute_dtype=torch.bfloat16))
    dense = decode.decode_attention(q, k, v, seq([1177]))
    assert (o.float() - dense.float()).abs().max().item() < 0.03


# ---------------------------------------------------------------- SparQ
@pytest.mark.parametrize("dtype,r,num_splits", [(torch.bfloat16, 4, None), (torch.float16, 8, 3),
                                               (torch.bfloat16, 32, 1)])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_sparq_scores(small_blocks, dtype, H, Hkv, r, num_splits):
    torch.manual_seed(9)
    lens, d = [19, 1, 3, 50], 32
    B, S_max = len(lens), 53
    q = rand(B, H, d, dtype=dtype)
    k, _ = make_kv(B, Hkv, S_max, d, lens, dtype)
    k_t = k.transpose(2, 3).contiguous()
    i1 = torch.stack([torch.stack([torch.randperm(d)[:r] for _ in range(Hkv)])
                      for _ in range(B)]).int().to(DEVICE)
    tau = torch.rand(B, H, device=DEVICE) + 0.5
    s = sparq.sparq_approx_scores(q, k_t, i1, seq(lens), tau, num_splits=num_splits)
    ref = sparq.sparq_approx_scores_ref(q, k_t, i1, seq(lens), tau)
    ref_lp = sparq.sparq_approx_scores_ref(q, k_t, i1, seq(lens), tau, compute_dtype=dtype)
    assert_close(s, ref, ref_lp, atol=1e-5)
    for b, n in enumerate(lens):
        assert (s[b, :, n:] == 0).all()
        assert torch.allclose(s[b].sum(-1), torch.ones(H, device=DEVICE), atol=1e-5)


@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_sparq_full_rank_is_softmax(small_blocks, H, Hkv):
    """r = d, tau = sqrt(d): the approximate scores are the exact attention probabilities."""
    torch.manual_seed(10)
    lens, d = [37, 5], 32
    B, S_max = 2, 40
    q = rand(B, H, d, dtype=torch.bfloat16)
    k, _ = make_kv(B, Hkv, S_max, d, lens, torch.bfloat16)
    i1 = torch.stack([torch.randperm(d) for _ in range(B * Hkv)]).reshape(B, Hkv, d)
    tau = torch.full((B, H), d ** 0.5, device=DEVICE)
    s = sparq.sparq_approx_scores(q, k.transpose(2, 3).contiguous(), i1.int().to(DEVICE),
                                  seq(lens), tau)
    G = H // Hkv
    for b, n in enumerate(lens):
        kk = k[b, :, :n].float().repeat_interleave(G, dim=0)
        p = torch.softmax(torch.einsum("hd,hnd->hn", q[b].float(), kk) / d ** 0.5, dim=-1)
        assert torch.allclose(s[b, :, :n], p, atol=1e-5)


def test_sparq_interpolate():
    torch.manual_seed(11)
    y = rand(3, 8, 32, dtype=torch.bfloat16)
    alpha = torch.rand(3, 8, device=DEVICE)
    v_mean = rand(3, 2, 32)
    o = sparq.sparq_interpolate(y, alpha, v_mean)
    assert o.dtype == y.dtype
    torch.testing.assert_close(o, sparq.sparq_interpolate_ref(y, alpha, v_mean), atol=1e-5,
                               rtol=2 ** -7)


# ---------------------------------------------------------------- Quest
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_quest_scores(small_blocks, dtype, H, Hkv):
    torch.manual_seed(12)
    B, P_max, d = 3, 37, 32
    n_pages = seq([37, 1, 19])
    q = rand(B, H, d, dtype=dtype)
    keys = rand(B, Hkv, P_max, 16, d)  # 16 tokens a page
    kmin, kmax = keys.amin(3).to(dtype), keys.amax(3).to(dtype)
    s = quest.quest_page_scores(q, kmin, kmax, n_pages)
    ref = quest.quest_page_scores_ref(q, kmin, kmax, n_pages)
    ref_lp = quest.quest_page_scores_ref(q, kmin, kmax, n_pages, compute_dtype=dtype)
    valid = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(s), valid) and (s[~valid] == float("-inf")).all()
    assert_close(s[valid], ref[valid], ref_lp[valid], atol=1e-4)
    # an upper bound of every token's q·k in the page
    G = H // Hkv
    qk = torch.einsum("bhd,bhptd->bhpt", q.float(),
                      keys.to(dtype).float().repeat_interleave(G, dim=1))
    assert (qk.amax(-1)[valid] <= s[valid] + 1e-3).all()


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
