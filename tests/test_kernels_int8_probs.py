"""Gathered INT8 attention with logits (kernels/int8_probs.py) against the fp32 torch reference
(dequantize, then attend over the list), on small odd sizes under Triton's interpreter on CPU
(or on CUDA); then ALISA's weight accumulation fed by it."""
import pytest
import torch

from kernel_checks import assert_close, poison  # noqa: F401 (autouse fixture)
from kernel_small import DEVICE, GROUPS, make_kv, rand, small_blocks  # noqa: F401 (fixture)
from kvsim.kernels import gather, int8_probs, int8kv, scores


def quantized(B, Hkv, S, d, dtype):
    k, v = make_kv(B, Hkv, S, d, [S] * B, dtype)
    return [*int8kv.quantize_kv(k), *int8kv.quantize_kv(v)]  # kq, ks, kz, vq, vs, vz


def lists(B, Hsel, S, K, page=1):
    idx = torch.stack([torch.stack([torch.randperm(S // page)[:K] for _ in range(Hsel)]) for _ in range(B)])
    counts = torch.tensor([[K * page - 3 * b] * Hsel for b in range(B)], dtype=torch.int32)
    return idx.to(DEVICE).int(), counts.to(DEVICE)


def low_precision_ref(q, parts, idx, counts, dtype, page):
    kq, ks, kz, vq, vs, vz = parts
    k, v = int8kv.dequantize_kv(kq, ks, kz, dtype), int8kv.dequantize_kv(vq, vs, vz, dtype)
    return gathered_ref(q, k, v, idx, counts, page, compute_dtype=dtype)


def gathered_ref(q, k, v, idx, counts, page, **kw):
    return gather.gathered_decode_attention_ref(q, k, v, idx, counts, page_size=page, **kw)


@pytest.mark.parametrize("num_splits", [None, 3])
@pytest.mark.parametrize("per_query_head", [False, True])
@pytest.mark.parametrize("H,Hkv", GROUPS)
def test_int8_gathered_logits_match_reference(small_blocks, H, Hkv, per_query_head, num_splits):
    torch.manual_seed(3)
    B, d, S, K, dtype = 3, 32, 53, 23, torch.bfloat16
    Hsel = H if per_query_head else Hkv
    q = rand(B, H, d, dtype=dtype)
    parts = quantized(B, Hkv, S, d, dtype)
    idx, counts = lists(B, Hsel, S, K)
    kq, ks, kz, vq, vs, vz = parts
    o, lse, logits = int8_probs.gathered_decode_attention_int8(
        q, kq, vq, ks, kz, vs, vz, idx, counts, logits=True, num_splits=num_splits)
    ro, rlse, rlogits = int8_probs.gathered_decode_attention_int8_ref(
        q, kq, vq, ks, kz, vs, vz, idx, counts, logits=True, out_dtype=torch.float32)
    assert_close(o, ro, low_precision_ref(q, parts, idx, counts, dtype, 1))
    assert torch.allclose(lse, rlse, atol=2e-2)
    for b in range(B):
        n = int(counts[b, 0])
        assert torch.allclose(logits[b, :, :n], rlogits[b, :, :n], atol=2e-2, rtol=1e-2)
        total = torch.exp(logits[b, :, :n] - lse[b, :, None]).sum(-1)  # weights sum to 1
        assert torch.allclose(total, torch.ones_like(total), atol=1e-4)


def test_int8_gathered_pages_without_logits(small_blocks):
    torch.manual_seed(4)
    B, H, Hkv, d, S, P, pages, dtype = 2, 8, 2, 32, 80, 4, 7, torch.float16
    q = rand(B, H, d, dtype=dtype)
    parts = quantized(B, Hkv, S, d, dtype)
    idx, counts = lists(B, Hkv, S, pages, page=P)
    kq, ks, kz, vq, vs, vz = parts
    o = int8_probs.gathered_decode_attention_int8(q, kq, vq, ks, kz, vs, vz, idx, counts, page_size=P)
    ref = int8_probs.gathered_decode_attention_int8_ref(q, kq, vq, ks, kz, vs, vz, idx, counts,
                                                        page_size=P, out_dtype=torch.float32)
    assert o.dtype == dtype
    assert_close(o, ref, low_precision_ref(q, parts, idx, counts, dtype, P))


def test_alisa_accumulation_from_int8_logits(small_blocks):
    """acc[idx] += Σ_heads weights, with the weights from the int8 kernel: equal to the reference
    weights of the dequantized rows."""
    torch.manual_seed(5)
    B, H, Hkv, d, S, K, dtype = 2, 4, 2, 32, 41, 17, torch.bfloat16
    q = rand(B, H, d, dtype=dtype)
    kq, ks, kz, vq, vs, vz = quantized(B, Hkv, S, d, dtype)
    one = torch.stack([torch.randperm(S)[:K] for _ in range(B)]).to(DEVICE).int()
    counts = torch.tensor([K, K - 4], dtype=torch.int32, device=DEVICE)
    idx = one[:, None].expand(B, Hkv, K).contiguous()
    _, lse, logits = int8_probs.gathered_decode_attention_int8(
        q, kq, vq, ks, kz, vs, vz, idx, counts[:, None].expand(B, Hkv).contiguous(), logits=True)
    acc = scores.accumulate_weights(logits, lse, torch.zeros(B, S, device=DEVICE), counts, H, indices=one)
    _, rlse, rlogits = int8_probs.gathered_decode_attention_int8_ref(
        q, kq, vq, ks, kz, vs, vz, idx, counts[:, None].expand(B, Hkv), logits=True)
    want = scores.accumulate_weights_ref(rlogits.nan_to_num(neginf=-1e30), rlse, torch.zeros(B, S, device=DEVICE),
                                         counts, H, indices=one)
    assert torch.allclose(acc, want, atol=1e-3)
