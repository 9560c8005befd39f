"""Small-size kernel helpers for the CPU tests: the interpreter, blocks of 16 so small contexts
cross blocks and splits, and the device the kernels run on."""
import pytest
import torch

from kernel_checks import assert_close, padded_kv, use_interpreter_without_gpu

use_interpreter_without_gpu()

from kvsim.kernels import _common, decode  # noqa: E402

DEVICE = "cpu" if _common.interpreting() else "cuda"
DTYPES = [torch.bfloat16, torch.float16]
GROUPS = [(4, 4), (4, 2), (8, 2)]  # (H, Hkv): G = 1, 2, 4


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
    return padded_kv(rand, B, Hkv, S_max, d, lens, dtype, pad)


def seq(lens):
    return torch.tensor(lens, dtype=torch.int32, device=DEVICE)


def check_dense(q, k, v, lens, **kw):
    o = decode.decode_attention(q, k, v, lens, **kw)
    assert o.dtype == q.dtype and o.shape == q.shape
    scale = kw.get("scale")
    ref = decode.decode_attention_ref(q, k, v, lens, scale=scale, out_dtype=torch.float32)
    ref_lp = decode.decode_attention_ref(q, k, v, lens, scale=scale, compute_dtype=q.dtype)
    assert_close(o, ref, ref_lp)
    return o
