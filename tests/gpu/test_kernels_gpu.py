"""The kernels at real sizes on a CUDA GPU (B up to 8, S up to 128k, H=32, Hkv=8, d=128).

Same checks as tests/test_kernels.py: kernel error vs an fp32 torch reference at most twice the
same-precision torch error (+ small atol), poisoned outputs, NaN in cache rows that must not be
read, and equivalences (gather over all rows = dense, full window = dense, SparQ with r = d).
Skipped without CUDA, and when this process runs Triton's interpreter (run tests/gpu on its own:
``pytest tests/gpu``).
"""
import math

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from kernel_checks import ATOL, assert_close, padded_kv, poison  # noqa: E402,F401 (autouse fixture)
from kvsim.kernels import _common, decode, gather, int8kv  # noqa: E402
from kvsim.methods.quest import kernels as quest  # noqa: E402
from kvsim.methods.sparq import kernels as sparq  # noqa: E402

if _common.interpreting():
    pytest.skip("triton runs in interpreter mode in this process; run `pytest tests/gpu` alone",
                allow_module_level=True)

DEV = "cuda"
H, HKV, D = 32, 8, 128


def rand(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, device=DEV, dtype=dtype)


def make_kv(B, Hkv, S_max, lens, dtype=torch.bfloat16, d=D):
    """Strided views of a preallocated cache (S_max + 64 rows); rows ≥ seq_len are NaN."""
    return padded_kv(rand, B, Hkv, S_max, d, lens, dtype, pad=64)


def seq(lens):
    return torch.tensor(lens, dtype=torch.int32, device=DEV)


def check_gather(q, k, v, idx, counts):
    """The gathered kernel and its lse against the fp32 reference; returns it and the bf16 reference."""
    o, lse = gather.gathered_decode_attention(q, k, v, idx, counts, return_lse=True)
    ref, lse_ref = gather.gathered_decode_attention_ref(q, k, v, idx, counts, return_lse=True,
                                                       out_dtype=torch.float32)
    ref_lp = gather.gathered_decode_attention_ref(q, k, v, idx, counts,
                                                  compute_dtype=torch.bfloat16)
    assert_close(o, ref, ref_lp)
    assert torch.allclose(lse, lse_ref, atol=1e-3, rtol=1e-5)
    return o, ref_lp


LONG = [131072, 1, 4097, 77777, 19, 65536, 1177, 100000]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("Hkv", [8, 32, 2])
@pytest.mark.parametrize("num_splits", [None, 1, 37])
def test_decode_real(dtype, Hkv, num_splits):
    torch.manual_seed(0)
    lens = LONG if Hkv == 8 else [32768, 3, 20000, 1]
    q = rand(len(lens), H, D, dtype=dtype)
    k, v = make_kv(len(lens), Hkv, max(lens), lens, dtype)
    o = decode.decode_attention(q, k, v, seq(lens), num_splits=num_splits)
    ref = decode.decode_attention_ref(q, k, v, seq(lens), out_dtype=torch.float32)
    ref_lp = decode.decode_attention_ref(q, k, v, seq(lens), compute_dtype=dtype)
    assert_close(o, ref, ref_lp)


def test_windowed_duo_real():
    torch.manual_seed(1)
    lens, sink, recent = [131072, 300, 50000, 64], 64, 256
    full = torch.tensor([True, False] * (HKV // 2), device=DEV)
    q = rand(len(lens), H, D)
    k, v = make_kv(len(lens), HKV, max(lens), lens)
    for b, n in enumerate(lens):  # streaming heads must not read outside their window
        if sink + recent < n:
            k[b, 1::2, sink:n - recent] = float("nan")
            v[b, 1::2, sink:n - recent] = float("nan")
    args = (q, k, v, seq(lens), sink, recent, full)
    o = decode.windowed_decode_attention(*args)
    assert_close(o, decode.windowed_decode_attention_ref(*args, out_dtype=torch.float32),
                 decode.windowed_decode_attention_ref(*args, compute_dtype=torch.bfloat16))
    k, v = make_kv(len(lens), HKV, max(lens), lens)
    dense = decode.decode_attention(q, k, v, seq(lens), num_splits=16)
    wide = decode.windowed_decode_attention(q, k, v, seq(lens), 1, 131072, num_splits=16)
    assert torch.equal(dense, wide)


def test_gather_all_rows_is_dense_real():
    torch.manual_seed(2)
    lens, S = [32768, 5, 20001, 32000], 32768
    B = len(lens)
    q = rand(B, H, D)
    k, v = make_kv(B, HKV, S, lens)
    idx = torch.full((B, HKV, S), -1, dtype=torch.int32, device=DEV)
    for b, n in enumerate(lens):
        for h in range(HKV):
            idx[b, h, :n] = torch.randperm(n, device=DEV).int()
    counts = seq(lens)[:, None].repeat(1, HKV)
    o, ref_lp = check_gather(q, k, v, idx, counts)
    assert_close(o, decode.decode_attention(q, k, v, seq(lens)), ref_lp, atol=2 * ATOL)


def test_gather_per_query_head_real():
    torch.manual_seed(3)
    lens, K = [131072, 4096, 70000, 2048], 2048
    B = len(lens)
    q = rand(B, H, D)
    k, v = make_kv(B, HKV, max(lens), lens)
    counts = torch.randint(1, K + 1, (B, H), dtype=torch.int32, device=DEV)
    idx = torch.stack([torch.stack([torch.randperm(n, device=DEV)[:K] for _ in range(H)])
                       for n in lens]).int()
    o, ref_lp = check_gather(q, k, v, idx, counts)


def test_int8_real():
    torch.manual_seed(4)
    lens = [32768, 1, 20000, 4097, 32768, 77, 30000, 1177]
    B = len(lens)
    q = rand(B, H, D)
    k, v = make_kv(B, HKV, 32768, [32768] * B)
    (kq, ks, kz), (vq, vs, vz) = int8kv.quantize_kv(k), int8kv.quantize_kv(v)
    args = (q, kq, vq, ks, kz, vs, vz, seq(lens))
    o = int8kv.decode_attention_int8(*args)
    assert_close(o, int8kv.decode_attention_int8_ref(*args, out_dtype=torch.float32),
                 int8kv.decode_attention_int8_ref(*args, compute_dtype=torch.bfloat16))
    dense = decode.decode_attention_ref(q, k, v, seq(lens), out_dtype=torch.float32)
    assert (o.float() - dense).abs().max().item() < 0.03


def test_sparq_real():
    torch.manual_seed(5)
    lens, r = [131072, 1, 65536, 4097], 16
    B, S_max = len(lens), 131072
    q = rand(B, H, D)
    k, _ = make_kv(B, HKV, S_max, lens)
    k_t = k.transpose(2, 3).contiguous()
    i1 = torch.stack([torch.stack([torch.randperm(D, device=DEV)[:r] for _ in range(HKV)])
                      for _ in range(B)]).int()
    tau = torch.rand(B, H, device=DEV) + 1.0
    s = sparq.sparq_approx_scores(q, k_t, i1, seq(lens), tau)
    assert_close(s, sparq.sparq_approx_scores_ref(q, k_t, i1, seq(lens), tau),
                 sparq.sparq_approx_scores_ref(q, k_t, i1, seq(lens), tau,
                                               compute_dtype=torch.bfloat16), atol=1e-6)
    full = torch.arange(D, device=DEV, dtype=torch.int32).expand(B, HKV, D).contiguous()
    s = sparq.sparq_approx_scores(q, k_t, full, seq(lens), torch.full_like(tau, math.sqrt(D)))
    G = H // HKV
    for b, n in enumerate(lens):
        kk = k[b, :, :n].float().repeat_interleave(G, dim=0)
        p = torch.softmax(torch.einsum("hd,hnd->hn", q[b].float(), kk) / math.sqrt(D), dim=-1)
        assert torch.allclose(s[b, :, :n], p, atol=1e-5)
        assert (s[b, :, n:] == 0).all()


def test_quest_real():
    torch.manual_seed(6)
    B, P_max = 8, 8192
    n_pages = seq([8192, 1, 4000, 8191, 17, 8192, 100, 5000])
    q = rand(B, H, D)
    kmin = rand(B, HKV, P_max, D)
    kmax = (kmin.float() + torch.rand(B, HKV, P_max, D, device=DEV)).to(torch.bfloat16)
    s = quest.quest_page_scores(q, kmin, kmax, n_pages)
    ref = quest.quest_page_scores_ref(q, kmin, kmax, n_pages)
    ref_lp = quest.quest_page_scores_ref(q, kmin, kmax, n_pages, compute_dtype=torch.bfloat16)
    valid = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(s), valid)
    assert_close(s[valid], ref[valid], ref_lp[valid], atol=1e-3)


def test_default_configs_within_candidates():
    for kind, cfg in _common.CONFIGS.items():
        assert cfg in _common.CANDIDATES[kind], kind
