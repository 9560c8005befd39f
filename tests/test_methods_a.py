"""SparQ, TidalDecode, Quest and DuoAttention: bytes and FLOPs by hand (from the papers),
equivalence with dense at full budget, bigger budgets never cost less, bad parameters, the CLI."""
import subprocess
import sys
from math import log2
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kvsim.errors import KvsimError
from kvsim.profiles import load_profile
from kvsim.methods import get_method
from kvsim.models import load_model
from kvsim.predict import predict
from kvsim.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
HW = load_profile("h100")
S, BATCH, D = 32768, 2, 128  # every hand check: 32k context, batch 2, head dim 128, bf16


def cost(method, model="llama-3.1-8b", seq=S, batch=BATCH, prefill=False, **params):
    m, mod = get_method(method, params), load_model(model)
    wl = Workload(seq=seq, batch=batch)
    return m.prefill_cost(mod, HW, wl) if prefill else m.cost(mod, HW, wl)


def op_sum(c, name, quantity):
    return float(sum(np.asarray(getattr(op, quantity), dtype=float) for op in c.ops if op.name == name))


def attn(c, quantity="hbm_bytes"):
    return float(getattr(c.attention(), quantity))


def shape(model):  # (layers, KV heads, G)
    return {"llama-3.1-8b": (32, 8, 4), "llama-2-7b": (32, 32, 1)}[model]


# ---- hand checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-2-7b"])
def test_sparq_by_hand(model):
    L, H, G = shape(model)
    r, k = D // 8, S // 16  # defaults: d/8, S/16 (the local k/4 are among the k)
    c, n = cost("sparq", model), L * BATCH * H  # n: (layer, sequence, KV head) triples
    reads = {  # per KV head and layer, bf16 KV and activations
        "layers/attn/sparq_topr": G * D * 2,
        "layers/attn/sparq_score_approx": S * r * 2 + G * r * 2 + r * 4,  # K[:, i1] from the d-major copy
        "layers/attn/sparq_softmax": G * S * 4,  # fp32 scores (kvsim/methods/sparq/kernels.py)
        "layers/attn/sparq_topk": S * 4,
        "layers/attn/sparq_gather": 2 * k * D * 2 + k * 4 + G * D * 2,  # 2·k·d·b + indices + q
        "layers/attn/sparq_mix": G * k * 4 + k * 4 + G * D * 2 + D * 4,  # α and the mix, Σv fp32
        "layers/attn/sparq_v_sum": D * 4 + D * 2,
    }
    for name, per_head in reads.items():
        assert op_sum(c, name, "hbm_read") == n * per_head, name
    writes = {"layers/attn/sparq_score_approx": G * S * 4, "layers/attn/sparq_topk": k * 8,
              "layers/attn/sparq_softmax": (G + 1) * S * 4,  # ŝ and its group sum, one pass
              "layers/attn/sparq_mix": G * D * 2, "layers/attn/sparq_v_sum": D * 4}
    for name, per_head in writes.items():
        assert op_sum(c, name, "hbm_write") == n * per_head, name
    assert op_sum(c, "layers/attn/sparq_score_approx", "flops") == n * G * S * 2 * r
    assert op_sum(c, "layers/attn/sparq_gather", "flops") == n * G * k * (4 * D + 5)
    assert op_sum(c, "layers/attn/sparq_topk", "flops") == pytest.approx(n * S * log2(S))
    # K stored twice: 3·d·b per new token, and +S·d·b of memory per KV head (+50 %) plus v̄
    assert op_sum(c, "layers/attn/kv_append", "hbm_write") == L * BATCH * H * 3 * D * 2
    assert float(c.kv_bytes) == L * BATCH * H * (3 * S * D * 2 + D * 4)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-2-7b"])
def test_tidaldecode_by_hand(model):
    L, H, G = shape(model)
    k, Hq = 256, H * G
    c, dense = cost("tidaldecode", model), cost("dense", model)
    full = lambda field: op_sum(c, "layers/attn/dense", field) + op_sum(c, "layers/attn/select_decode", field)  # noqa: E731
    assert full("hbm_read") == 4 * BATCH * H * (2 * S * D * 2 + G * D * 2)
    assert full("flops") == 4 * BATCH * Hq * S * (4 * D + 5)
    # the two selection layers also write H_q·S·4 fp32 logits, which the top-k reads back
    logits = 2 * BATCH * Hq * S * 4
    assert full("hbm_write") == op_sum(dense, "layers/attn/decode", "hbm_write") * 4 / L + logits
    assert op_sum(c, "layers/attn/select_decode", "hbm_write") == op_sum(dense, "layers/attn/decode", "hbm_write") * 2 / L + logits
    assert op_sum(c, "layers/attn/select_topk", "hbm_read") == logits
    assert op_sum(c, "layers/attn/select_topk", "hbm_write") == 2 * BATCH * Hq * k * (4 + 4)
    # sparse layers, per query head: 2·(k+1)·d·b + k·4 and q; FLOPs 4·(k+1)·d (+5 per score)
    sparse = (L - 4) * BATCH * Hq
    assert op_sum(c, "layers/attn/sparse", "hbm_read") == pytest.approx(sparse * (2 * (k + 1) * D * 2 + k * 4 + D * 2))
    assert op_sum(c, "layers/attn/sparse", "flops") == sparse * (k + 1) * (4 * D + 5)


def test_tidaldecode_correction_amortized():
    L, H, G = shape("llama-3.1-8b")
    off, on = cost("tidaldecode"), cost("tidaldecode", correction_period=64)
    assert not any(op.name.startswith("correction/") for op in off.ops)
    # every 64 steps the cache is read once: 2·S·d·b / 64 per KV head and layer, + q and o
    assert op_sum(on, "correction/attn", "hbm_read") == L * BATCH * H * (2 * S * D * 2 / 64 + G * D * 2)
    assert op_sum(on, "correction/attn", "flops") == L * BATCH * H * G * S * (4 * D + 5)
    redo = sum(float(op.flops) for op in on.ops if op.name.startswith("correction/layers/"))
    once = sum(float(op.flops) for op in off.ops if op.kind in ("linear", "elementwise") and op.name.startswith("layers/"))
    assert redo == pytest.approx(once)  # N tokens every N steps = one token's layer work per step
    assert all(op.kind == "recompute" for op in on.ops if op.name.startswith("correction/layers/"))
    assert attn(cost("tidaldecode", correction_period=16)) > attn(on) > attn(off)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-2-7b"])
def test_quest_by_hand(model):
    L, H, G = shape(model)
    P, B = 16, 4096
    pages, c = S // P, cost("quest", model)
    sparse = (L - 2) * BATCH * H
    assert op_sum(c, "layers/attn/dense", "hbm_read") == 2 * BATCH * H * (2 * S * D * 2 + G * D * 2)
    union = min(G * B, S)  # rows a KV head reads: the union of its G query heads' B tokens
    assert op_sum(c, "layers/attn/quest_pages", "hbm_read") == sparse * (union * (2 * D * 2 + 4 / P) + G * D * 2)
    assert op_sum(c, "layers/attn/quest_pages", "flops") == sparse * G * union * (4 * D + 5)
    # page scores: 2·(S/P)·d·b min/max metadata, once per KV head; G·(S/P)·4·d FLOPs
    assert op_sum(c, "layers/attn/quest_estimate", "hbm_read") == sparse * (2 * pages * D * 2 + G * D * 2)
    assert op_sum(c, "layers/attn/quest_estimate", "flops") == sparse * G * pages * 4 * D
    assert op_sum(c, "layers/attn/quest_topk", "hbm_write") == sparse * G * (B // P - 1) * (4 + 4)  # fp32 value + index
    assert op_sum(c, "layers/attn/quest_topk", "hbm_read") == sparse * G * (pages - 1) * 4  # fp32 scores
    assert op_sum(c, "layers/attn/quest_metadata", "hbm_write") == (L - 2) * BATCH * H * 2 * D * 2  # not in dense layers
    assert float(c.kv_bytes) == L * BATCH * H * (2 * S * D * 2 + 2 * pages * D * 2)  # KV + KV/P


@pytest.mark.parametrize("model,rho", [("llama-3.1-8b", 0.5), ("llama-2-7b", 0.25)])
def test_duoattention_by_hand(model, rho):
    L, H, G = shape(model)
    window = 64 + 256
    c = cost("duoattention", model)
    ret, stream = rho * H, (1 - rho) * H
    assert op_sum(c, "layers/attn/retrieval", "hbm_read") == L * BATCH * ret * (2 * S * D * 2 + G * D * 2)
    assert op_sum(c, "layers/attn/streaming", "hbm_read") == L * BATCH * stream * (2 * (window + 1) * D * 2 + G * D * 2)
    assert op_sum(c, "layers/attn/streaming", "flops") == L * BATCH * stream * G * (window + 1) * (4 * D + 5)
    assert float(c.kv_bytes) == L * BATCH * (ret * S + stream * window) * 2 * D * 2


def test_duoattention_prefill_flops_by_chunk():
    L, H, G = shape("llama-3.1-8b")
    T, C, W = 80000, 32000, 320  # three chunks: 32000, 32000, 16000
    stream_pairs = (C * (C + 1) / 2) + (C * W + C * (C + 1) / 2) + (16000 * W + 16000 * 16001 / 2)
    pairs = 0.5 * H * T * (T + 1) / 2 + 0.5 * H * stream_pairs
    c = cost("duoattention", seq=T, batch=1, prefill=True)
    assert op_sum(c, "layers/attn/prefill", "flops") == pytest.approx(L * G * pairs * (4 * D + 5))
    dense = cost("dense", seq=T, batch=1, prefill=True)
    full = cost("duoattention", seq=T, batch=1, prefill=True, retrieval_ratio=1.0)
    assert attn(full, "flops") == pytest.approx(attn(dense, "flops"), rel=1e-4)
    assert attn(c, "flops") < attn(dense, "flops")
    # at 1M tokens a streaming head's pairs (~T·(C/2 + W)) vanish next to T²/2: → ρ = 0.5 of dense
    long = [cost(m, seq=1_000_000, batch=1, prefill=True) for m in ("duoattention", "dense")]
    assert 0.5 < attn(long[0], "flops") / attn(long[1], "flops") < 0.52


# ---- equivalence with dense at full budget -------------------------------------------------
@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-2-7b"])
def test_full_budget_equals_dense(model):
    L, H, G = shape(model)
    dense = cost("dense", model)
    for c in (cost("quest", model, budget=S), cost("quest", model, budget=2 * S)):
        assert attn(c) == pytest.approx(attn(dense), rel=1e-12)
        assert attn(c, "flops") == pytest.approx(attn(dense, "flops"), rel=1e-12)
    # Duo runs the windowed kernel, whose split policy is wider than the dense kernel's: only
    # the split-K partials differ (under 1%); the K/V read itself is the same
    duo = cost("duoattention", model, retrieval_ratio=1.0)
    assert attn(duo) == pytest.approx(attn(dense), rel=1e-2)
    assert op_sum(duo, "layers/attn/retrieval", "hbm_bytes") >= op_sum(dense, "layers/attn/decode", "hbm_bytes") - 1
    sparq = cost("sparq", model, k=S)  # its gather equals dense plus the int32 index of each row
    gather = op_sum(sparq, "layers/attn/sparq_gather", "hbm_bytes") + op_sum(sparq, "layers/attn/sparq_gather_combine", "hbm_bytes")
    assert gather - L * BATCH * H * S * 4 == pytest.approx(attn(dense), rel=1e-2)  # split-K partials differ
    assert attn(cost("tidaldecode", model, k=S)) >= attn(dense)
    assert float(cost("duoattention", model, retrieval_ratio=1.0).kv_bytes) == float(dense.kv_bytes)


# ---- budgets (the shared laws are in test_conformance.py) ----------------------------------
models = st.sampled_from(["llama-3.1-8b", "llama-2-7b"])


@settings(max_examples=30, deadline=None)
@given(model=models, seq=st.integers(4096, 300_000), a=st.integers(1, 64), b=st.integers(1, 64))
def test_bigger_budget_never_costs_less(model, seq, a, b):
    lo, hi = sorted((a, b))
    # Quest below the context only: at budget >= S it skips estimation (dense), which can be
    # cheaper than a budget just under S; that jump is the official controller's behaviour.
    pairs = [("sparq", "k", lo * 64, hi * 64), ("tidaldecode", "k", lo * 64, hi * 64),
             ("quest", "budget", lo * 64, hi * 64), ("duoattention", "retrieval_ratio", lo / 64, hi / 64),
             ("duoattention", "recent", lo * 64, hi * 64)]
    for method, name, small, large in pairs:
        if method == "quest" and large >= seq:
            continue
        assert attn(cost(method, model, seq, **{name: large})) >= attn(cost(method, model, seq, **{name: small}))
        assert float(cost(method, model, seq, **{name: large}).kv_bytes) >= float(cost(method, model, seq, **{name: small}).kv_bytes)


# ---- bad parameters and the CLI -------------------------------------------------------------
@pytest.mark.parametrize("method,params,seq", [
    ("sparq", {"bogus": 1}, S), ("tidaldecode", {"topk": 1}, S), ("quest", {"k": 1}, S),
    ("duoattention", {"ratio": 0.5}, S),
    ("sparq", {"k": S + 1}, S), ("sparq", {"r": 129}, S), ("sparq", {"k": 64, "local": 65}, S),
    ("sparq", {"k": -1}, S), ("duoattention", {"retrieval_ratio": 1.5}, S),
    ("duoattention", {"retrieval_ratio": -0.1}, S), ("duoattention", {"sink": 0, "recent": 0}, S),
    ("quest", {"budget": 100}, S), ("quest", {"budget": 16}, S), ("quest", {"page_size": 0}, S),
    ("tidaldecode", {"reselect_layer": 2}, S), ("tidaldecode", {"reselect_layer": 32}, S),
    ("tidaldecode", {"correction_period": -1}, S),
])
def test_bad_parameters_raise(method, params, seq):
    with pytest.raises(KvsimError) as err:
        predict("h100", method=method, seq=seq, **params)
    assert "\n" not in str(err.value) and method in str(err.value)


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_sparq():
    ok = kvsim("predict", "--hw", "h100", "--method", "sparq", "--seq", "128k")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("sparq") and "layers/attn/sparq_" in ok.stdout
    bad = kvsim("predict", "--hw", "h100", "--method", "sparq", "--param", "k=999999", "--seq", "4k")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "k=999999" in bad.stderr
