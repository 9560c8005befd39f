"""Which split-K attention kernel each launcher reaches (kernels/_attention.py), and the
combinations no kernel serves refused in one line. The values of every kernel are checked against
fp32 torch references in test_kernels.py (plain kernel: dense, windowed, gathered),
test_kernels_scores.py (logits, rope-on-load, position-masked), test_kernels_selection.py and
test_kernels_int8_probs.py (int8, dense and gathered)."""
import pytest
import torch

from kernel_checks import poison  # noqa: F401 (autouse fixture)
from kernel_small import DEVICE, make_kv, rand, seq, small_blocks  # noqa: F401 (fixture)
from kvsim.kernels import _attention, decode, gather, int8_probs, int8kv, scores

B, H, HKV, D, LENS = 2, 6, 2, 32, [21, 9]  # D/2 >= 16: tl.dot in the rope kernel on a GPU


def _inputs():
    torch.manual_seed(5)
    q = rand(B, H, D, dtype=torch.bfloat16)
    k, v = make_kv(B, HKV, 24, D, LENS, torch.bfloat16)
    idx = torch.stack([torch.randperm(9, device=DEVICE)[:7] for _ in range(B * HKV)]).view(B, HKV, 7)
    cnt = torch.tensor([[7, 5], [3, 0]], dtype=torch.int32, device=DEVICE)
    return q, k, v, idx.int(), cnt


def _int8(k, v):
    kq, ks, kz = int8kv.quantize_kv(k.nan_to_num())
    vq, vs, vz = int8kv.quantize_kv(v.nan_to_num())
    return kq, vq, ks, kz, vs, vz


CASES = {
    "dense": ("_attn_kernel", lambda q, k, v, i, c: decode.decode_attention(q, k, v, seq(LENS))),
    "window": ("_attn_kernel", lambda q, k, v, i, c: decode.windowed_decode_attention(
        q, k, v, seq(LENS), 2, 5, num_splits=2)),
    "gather": ("_attn_kernel", lambda q, k, v, i, c: gather.gathered_decode_attention(q, k, v, i, c)),
    "logits": ("_attn_kernel", lambda q, k, v, i, c: scores.decode_attention_with_logits(
        q, k, v, seq(LENS))),
    "int8": ("_attn_int8_kernel", lambda q, k, v, i, c: int8kv.decode_attention_int8(
        q, *_int8(k, v), seq(LENS))),
    "int8 gather": ("_attn_int8_kernel", lambda q, k, v, i, c: int8_probs.gathered_decode_attention_int8(
        q, *_int8(k, v), i, c, logits=True, num_splits=2)),
    "rope": ("_attn_rope_kernel", lambda q, k, v, i, c: decode.rope_decode_attention(
        q, k, v, seq(LENS), torch.arange(24, device=DEVICE), torch.ones(30, D // 2, device=DEVICE),
        torch.zeros(30, D // 2, device=DEVICE))),
    "masked": ("_attn_masked_kernel", lambda q, k, v, i, c: decode.positional_decode_attention(
        q, k, v, seq(LENS), torch.full((B, H), 10, device=DEVICE),
        torch.arange(24, device=DEVICE).expand(B, 24), num_splits=3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_launcher_reaches_its_kernel(small_blocks, monkeypatch, case):
    """The launch goes to the kernel named for what it reads (+ the combine with several splits)."""
    kernel, call = CASES[case]
    used = []
    real = _attention.launcher
    monkeypatch.setattr(_attention, "launcher", lambda fn, t: used.append(fn.__name__) or real(fn, t))
    out = call(*_inputs())
    assert used[0] == kernel and set(used[1:]) <= {"_combine_kernel"}
    o = out[0] if isinstance(out, tuple) else out  # logits past a row count stay unwritten
    assert o.shape == (B, H, D) and torch.isfinite(o).all()


def test_combinations_no_kernel_serves_are_refused():
    q, k, v, idx, cnt = _inputs()
    common = dict(scale=0.25, splits=1, prog_heads=HKV, hpp=H // HKV, seq_lens=seq(LENS))
    rope = (torch.arange(24, dtype=torch.int32), torch.ones(30, D // 2), torch.zeros(30, D // 2))
    with pytest.raises(ValueError, match="rope-on-load and position-masked attention are dense"):
        _attention.run_attention(q, k, v, mode=_attention.GATHER, indices=idx, counts=cnt,
                                 rope=rope, **common)
    with pytest.raises(ValueError, match="rope-on-load and position-masked attention are dense"):
        _attention.run_attention(q, k, v, mode=_attention.DENSE, return_lse=True,
                                 positions=(cnt, cnt), **common)
    with pytest.raises(ValueError, match="int8 attention reads dense or gathered rows"):
        _attention.run_attention(q, k, v, mode=_attention.WINDOW, int8=(q, q, q, q), **common)
