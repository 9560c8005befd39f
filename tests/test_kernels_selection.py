"""The selection and compressed-cache kernels against their fp32 references: int8 KV, SparQ's
approximate scores and interpolation, Quest's page scores (small odd sizes, as in test_kernels)."""
import pytest
import torch

from kernel_checks import assert_close, poison  # noqa: F401 (autouse fixture)
from kernel_small import DEVICE, DTYPES, GROUPS, make_kv, rand, seq, small_blocks  # noqa: F401
from kvsim.kernels import decode, int8kv
from kvsim.methods.quest import kernels as quest
from kvsim.methods.sparq import kernels as sparq


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


@pytest.mark.parametrize("local", [0, 4])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_sparq_group_sum_and_local(small_blocks, H, Hkv, local):
    """The normalising pass also writes ŝ summed over the group, +inf on the last ``local``."""
    torch.manual_seed(12)
    lens, d, r = [19, 1, 50], 32, 8
    B, S_max = len(lens), 53
    q = rand(B, H, d, dtype=torch.bfloat16)
    k, _ = make_kv(B, Hkv, S_max, d, lens, torch.bfloat16)
    k_t = k.transpose(2, 3).contiguous()
    i1 = torch.stack([torch.randperm(d)[:r] for _ in range(B * Hkv)]).reshape(B, Hkv, r)
    tau = torch.rand(B, H, device=DEVICE) + 0.5
    args = (q, k_t, i1.int().to(DEVICE), seq(lens), tau)
    s, group = sparq.sparq_scores_and_group(*args, local=local, num_splits=3)
    rs, rgroup = sparq.sparq_scores_and_group_ref(*args, local=local)
    assert torch.allclose(s, rs, atol=1e-5)
    assert torch.equal(torch.isinf(group), torch.isinf(rgroup)) and torch.equal(group > 0, rgroup > 0)
    assert int((group == float("inf")).sum()) == sum(min(local, n) for n in lens) * Hkv
    assert int((group == float("-inf")).sum()) == sum(S_max - n for n in lens) * Hkv
    finite = torch.isfinite(rgroup)
    assert torch.allclose(group[finite], rgroup[finite], atol=1e-5)


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
