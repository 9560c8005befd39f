"""ALISA, ADORE, H2O and StreamingLLM: bytes and FLOPs by hand from the papers,
full-budget equivalence with dense, bigger budgets never cost less (hypothesis)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kvsim.errors import KvsimError
from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS, split_count
from kvsim.methods import get_method
from kvsim.methods.adore.cost import ADORE
from kvsim.methods.alisa.cost import ALISA
from kvsim.predict import predict

ROOT = Path(__file__).resolve().parent.parent
S, B = 32768, 2
L, D_HEAD, BF16 = 32, 128, 2  # both models: 32 layers, head dim 128
GQA = dict(model="llama-3.1-8b", hq=32, hkv=8, g=4)
MHA = dict(model="llama-2-7b", hq=32, hkv=32, g=1)


def run(method, seq=S, batch=B, model="llama-3.1-8b", **kw):
    return predict("h100", method=method, seq=seq, batch=batch, model=model, **kw)


def op(pred, name):
    return next(o for o in pred.cost.ops if o.name == name)


def attn_bytes(pred):
    return pred.attention()["hbm_bytes"]


def q_bytes(m, queries=1):  # q read: every query head's d elements, bf16, all layers
    return L * B * m["hq"] * queries * D_HEAD * BF16


def test_alisa_by_hand():
    k, n = 3277, S  # round(32768·0.2/2) = round(3276.8)
    pred = run("alisa")
    decode = op(pred, "layers/attn/decode")
    kv = L * B * GQA["hkv"] * 4 * k * D_HEAD * BF16  # 4·k·d·b per KV head (2k rows of K and V)
    assert decode.hbm_read == kv + L * B * GQA["hkv"] * 2 * k * 4 + q_bytes(GQA)  # + int32 indices
    assert decode.flops == L * B * GQA["hq"] * 2 * k * (4 * D_HEAD + 5)  # ≈ 8·k·d per head
    splits = split_count(B, GQA["hkv"], 2 * k)  # the kernel writes its partials and the fp32 logits
    partials = B * GQA["hq"] * splits * (D_HEAD + 2) * 4
    assert decode.hbm_write == L * (partials + B * GQA["hq"] * 2 * k * 4)
    scores = op(pred, "layers/attn/score_update")  # the H_q·2k·4 logits; the 2k rows' index and score
    assert scores.hbm_read == L * B * (GQA["hq"] * 2 * k * 4 + 2 * k * (4 + 4))
    assert scores.hbm_write == L * B * 2 * k * 4
    topk = op(pred, "layers/attn/topk")  # top-k over the n − k older tokens, per layer
    assert topk.hbm_read == L * B * (n - k) * 4 and topk.hbm_write == L * B * k * 8
    assert pred.kv_bytes == L * B * GQA["hkv"] * n * 2 * D_HEAD * BF16 + L * B * n * 4


def test_alisa_int8_is_kv_dtype_int8():
    k = 3277
    by_param, by_dtype = run("alisa", kv_bits=8), run("alisa", kv_dtype="int8")
    for quantity in ("hbm_bytes", "flops", "kv_bytes", "latency_s"):
        assert getattr(by_param, quantity) == pytest.approx(getattr(by_dtype, quantity))
    decode = op(by_param, "layers/attn/decode")
    row = 2 * D_HEAD * 1 + 2 * 4 + 4  # int8 K and V, fp16 scale + zero each, int32 index
    assert decode.hbm_read == L * B * GQA["hkv"] * 2 * k * row + q_bytes(GQA)
    dequant = L * B * GQA["hkv"] * 2 * k * 2 * D_HEAD * 2
    assert decode.flops == L * B * GQA["hq"] * 2 * k * (4 * D_HEAD + 5) + dequant
    assert by_param.kv_bytes < run("alisa").kv_bytes * 0.52
    with pytest.raises(KvsimError, match="kv_bits=16"):
        run("alisa", kv_bits=16, kv_dtype="int8")
    with pytest.raises(KvsimError, match="fp8"):
        run("alisa", kv_bits=8, kv_dtype="fp8")


def test_alisa_sparsity_zero_reads_the_whole_cache():
    dense, alisa = op(run("dense"), "layers/attn/decode"), op(run("alisa", sparsity=0.0), "layers/attn/decode")
    assert alisa.hbm_read == dense.hbm_read + L * B * GQA["hkv"] * S * 4  # + indices only
    assert alisa.flops == dense.flops
    helper = ALISA(sparsity=0.0)
    assert helper.selected_tokens(S) == S and helper.selected_tokens(S + 1) == S + 1


@pytest.mark.parametrize("m", [GQA, MHA])
def test_h2o_by_hand(m):
    heavy = recent = 3276  # floor(0.1·32768)
    rows = heavy + recent + 1
    pred = run("h2o", model=m["model"])
    decode = op(pred, "layers/attn/decode")
    assert decode.hbm_read == L * B * m["hkv"] * 2 * rows * D_HEAD * BF16 + q_bytes(m)
    assert decode.flops == L * B * m["hq"] * rows * (4 * D_HEAD + 5)
    pairs = L * B * m["hkv"]  # one score set per KV head: G heads' weights summed
    logits = pairs * m["g"] * rows * 4  # fp32, written by the attention kernel, read by the update
    splits = split_count(B, m["hkv"], rows, DENSE_TARGET_PROGRAMS)
    assert decode.hbm_write == L * B * m["hq"] * splits * (D_HEAD + 2) * 4 + logits  # partials + logits
    scores = op(pred, "layers/attn/score_update")
    assert scores.hbm_read == logits + pairs * (rows - 1) * 4
    assert scores.hbm_write == pairs * rows * 4
    evict = op(pred, "layers/attn/evict")  # kvsim/methods/h2o/kernels.py: C+1 scores (4 B) and positions (8 B)
    assert evict.hbm_read == pairs * rows * (4 + 8) and evict.hbm_write == pairs * (4 + 8)
    assert pred.kv_bytes == pairs * rows * (2 * D_HEAD * BF16 + 4)


def test_h2o_full_budget_is_dense_plus_scores():
    dense, h2o = run("dense"), run("h2o", heavy=20000, recent=20000)
    logits = L * B * GQA["hq"] * S * 4  # the attention kernel's fp32 logits, for the update
    for name in ("layers/attn/decode", "layers/attn/decode_combine"):
        for q in ("hbm_read", "hbm_write", "flops"):
            extra = logits if (name, q) == ("layers/attn/decode", "hbm_write") else 0
            assert getattr(op(h2o, name), q) == getattr(op(dense, name), q) + extra
    assert op(h2o, "layers/attn/evict").hbm_bytes == 0 and op(h2o, "layers/attn/evict").launches == 0
    assert attn_bytes(h2o) == attn_bytes(dense) + logits + op(h2o, "layers/attn/score_update").hbm_bytes


def test_streamingllm_by_hand_and_full_window():
    C = 2004
    pred = run("streamingllm")
    decode = op(pred, "layers/attn/decode")
    tables = L * C * (4 + D_HEAD * BF16)  # slot positions and cos/sin rows, once per layer
    assert decode.hbm_read == L * B * GQA["hkv"] * 2 * (C + 1) * D_HEAD * BF16 + q_bytes(GQA) + tables
    rotate = L * B * GQA["hkv"] * 3 * C * D_HEAD  # keys rotated as they load: 3·C·d FLOPs
    assert decode.flops == L * B * GQA["hq"] * (C + 1) * (4 * D_HEAD + 5) + rotate
    dense, full = run("dense"), run("streamingllm", recent=40000)
    slot_positions = 94 * S  # once a step: the S slots' int64 positions, read 57 and write 37 B each
    assert attn_bytes(full) == attn_bytes(dense) + L * (S - 1) * (4 + D_HEAD * BF16) + slot_positions
    assert full.kv_bytes == dense.kv_bytes
    opt = run("streamingllm", model="opt-6.7b", seq=2048)  # learned positions: nothing to rotate
    opt_decode = op(opt, "layers/attn/decode")
    assert opt_decode.flops == opt.model.n_layers * opt.workload.batch * opt.model.n_heads * (C + 1) * (
        4 * opt.model.head_dim + 5)


def test_adore_by_hand():
    m, R = 2048, 8
    rows = m + R + 1
    pred = run("adore")
    decode = op(pred, "layers/attn/decode")  # (R+1) queries per head over m+R+1 keys
    assert decode.hbm_read == L * B * GQA["hkv"] * 2 * rows * D_HEAD * BF16 + q_bytes(GQA, R + 1)
    assert decode.flops == L * B * GQA["hq"] * (R + 1) * rows * (4 * D_HEAD + 5)
    # the chunk's R+1 K/V rows written for its attention, then the new token's row into its slot
    assert op(pred, "layers/attn/chunk_kv").hbm_write == L * B * (R + 1) * GQA["hkv"] * 2 * D_HEAD * BF16
    assert op(pred, "layers/attn/kv_append").hbm_write == L * B * GQA["hkv"] * 2 * D_HEAD * BF16
    released = S - 1 - m
    meta = B * ((m + 1) * 4 + released * 8 + 256 * 4)
    assert pred.kv_bytes == L * B * GQA["hkv"] * rows * 2 * D_HEAD * BF16 + meta


def test_adore_layers_do_r_plus_one_times_the_flops_at_equal_weight_bytes():
    R, widths = 8, {"qkv_proj": 4096, "o_proj": 4096, "gate_up": 4096, "down": 14336}  # d_in
    dense, adore = run("dense"), run("adore", R=R)
    for name, d_in in widths.items():
        full = next(n for n in (f"layers/attn/{name}", f"layers/mlp/{name}")
                    if n in [o.name for o in dense.cost.ops])
        assert op(adore, full).flops == (R + 1) * op(dense, full).flops
        # same weights; only the R extra rows of input activations are read on top
        assert op(adore, full).hbm_read - op(dense, full).hbm_read == L * B * R * d_in * BF16
    assert op(adore, "lm_head").flops == op(dense, "lm_head").flops  # logits for one token


def test_adore_cache_covering_the_context_is_dense():
    dense, adore = run("dense"), run("adore", m=40000)
    # the new key is rotated as the chunk's K/V are written for its attention (read K and V)
    assert op(adore, "layers/attn/chunk_kv").hbm_read == 2 * op(dense, "layers/attn/rope").hbm_read
    for o in dense.cost.ops:
        if o.name == "layers/attn/rope":
            continue
        mine = op(adore, o.name)
        assert (mine.hbm_read, mine.hbm_write, mine.flops) == (o.hbm_read, o.hbm_write, o.flops)
    assert ADORE(m=40000).tokens_through_layers(None, run("dense").workload) == 1


def test_sweeps_are_vectorized():
    seq, batch = np.array([1, 700, 5000, 40000]), np.array([[1], [3]])
    for name, params in [("alisa", {}), ("adore", {"m": 1024}), ("h2o", {}), ("streamingllm", {})]:
        grid = run(name, seq=seq, batch=batch, **params)
        one = run(name, seq=5000, batch=3, **params)
        assert np.shape(grid.latency_s) == (2, 4)
        assert grid.hbm_bytes[1, 2] == pytest.approx(one.hbm_bytes)
        assert grid.kv_bytes[1, 2] == pytest.approx(one.kv_bytes)
        assert run(name, seq=4096, gen=8, **params).generation.total_s > 0
        assert run(name, seq=4096, gpus=2, **params).hbm_bytes > 0


# ---- budgets (the shared laws are in test_conformance.py) -------------------------------------------------------------------------------------
MODELS = st.sampled_from(["llama-3.1-8b", "llama-2-7b", "opt-6.7b"])


FULL = 2 * 10 ** 4 + 1000 + 64  # past every H2O budget and ADORE m (+ R) drawn below


def budget_pairs(small, extra):
    """(method, smaller budget, bigger budget, only at contexts > FULL)."""
    sparsity, window, h = 0.99 * (1 - small), int(5e4 * small), int(1e4 * small)
    return [("alisa", {"sparsity": sparsity}, {"sparsity": sparsity * (1 - extra)}, False),
            ("streamingllm", {"recent": 1 + window}, {"recent": 1 + window + int(5e4 * extra)}, False),
            ("adore", {"R": int(64 * small)}, {"R": int(64 * (small + extra))}, False),
            # a cache that is not full yet skips H2O's eviction and ADORE's reconstruction
            ("h2o", {"heavy": h, "recent": 1},
             {"heavy": h + int(1e4 * extra), "recent": 1 + int(1e3 * extra)}, True),
            ("adore", {"m": 1 + h}, {"m": 1 + h + int(1e4 * extra)}, True)]


@settings(max_examples=30, deadline=None)
@given(MODELS, st.floats(0, 1), st.floats(0, 1), st.integers(1, 200000), st.integers(1, 32))
def test_a_bigger_budget_never_costs_less(model, small, extra, seq, batch):
    for name, less, more, only_full in budget_pairs(small, extra):
        if only_full and seq <= FULL:
            continue
        a = run(name, seq=seq, batch=batch, model=model, **less)
        b = run(name, seq=seq, batch=batch, model=model, **more)
        assert attn_bytes(a) <= attn_bytes(b) and a.hbm_bytes <= b.hbm_bytes and a.kv_bytes <= b.kv_bytes


@pytest.mark.parametrize("name, params, words", [
    ("alisa", {"sparsity": "1.5"}, "sparsity must be in [0, 1)"),
    ("alisa", {"sparsity": -0.1}, "sparsity"),
    ("alisa", {"sparsity": 1.0}, "sparsity"),
    ("alisa", {"kv_bits": 4}, "kv_bits must be 8 or 16"),
    ("adore", {"m": 0}, "m must be >= 1"),
    ("adore", {"R": -1}, "R must be >= 0"),
    ("adore", {"r": 3}, "unknown parameter 'r'"),
    ("h2o", {"heavy": -5}, "heavy must be >= 0"),
    ("h2o", {"heavy": 0, "recent": 0}, "at least 1 token"),
    ("streamingllm", {"recent": -1}, "recent must be >= 0"),
    ("streamingllm", {"sink": 0, "recent": 0}, "at least 1 token"),
])
def test_bad_params_raise_one_line(name, params, words):
    with pytest.raises(KvsimError) as err:
        get_method(name, params)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_cli_kv_bits_and_bad_sparsity():
    def kvsim(*args):
        return subprocess.run([sys.executable, "-m", "kvsim", "predict", "--hw", "h100", "--method", "alisa",
                               "--seq", "32k", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert kvsim("--param", "kv_bits=8").returncode == 0
    bad = kvsim("--param", "sparsity=1.5")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "sparsity" in bad.stderr and "Traceback" not in bad.stderr

