"""The runtime on a CUDA GPU (bf16, real llama-3.1-8b layer shapes, a few layers): each method
with the Triton kernels against the same engine on the torch references, measurement records,
pinned-memory offload. Skipped without CUDA; run on its own: ``pytest tests/gpu``."""
import math

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from kvsim.models import load_model  # noqa: E402
from kvsim.runtime import ops  # noqa: E402
from kvsim.runtime.engine import Engine  # noqa: E402
from kvsim.runtime.measure import measure, run_steps_for_profiling  # noqa: E402

MODEL, LAYERS, B, PREFILL, MAX_SEQ = "llama-3.1-8b", 5, 2, 3000, 3072
CFG = load_model(MODEL)
PARAMS = {
    "dense": {}, "sparq": {"k": 256}, "quest": {"budget": 512}, "tidaldecode": {"k": 256},
    "duoattention": {}, "alisa": {}, "h2o": {"heavy": 256, "recent": 256},
    "streamingllm": {"recent": 512}, "adore": {"m": 1024, "R": 4},
}


@pytest.fixture(scope="module")
def decoder():
    e = Engine(MODEL, n_layers=LAYERS, max_seq=MAX_SEQ, batch=B, device="cuda")
    return e.model


def run(method, params, decoder, steps=2, **kw):
    e = Engine(MODEL, method, params, batch=B, max_seq=MAX_SEQ, device="cuda", decoder=decoder, **kw)
    e.prefill_synthetic(PREFILL)
    logits = [e.step(torch.tensor([t, t + 7], device="cuda")) for t in range(steps)]
    return e, logits, e.attention_only_step()


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("method", sorted(PARAMS))
def test_kernels_match_torch_references(method, decoder, monkeypatch):
    ops.reset()
    _, fast, attn = run(method, PARAMS[method], decoder)
    used = ops.backends()
    if method in ("dense", "sparq", "quest", "tidaldecode", "duoattention"):
        assert any(v.startswith("kvsim.kernels.") and not v.endswith("_ref") for v in used.values()), used
    monkeypatch.setenv("KVSIM_RUNTIME_REFERENCE", "1")
    ops.reset()
    _, slow, attn_ref = run(method, PARAMS[method], decoder)
    ops.reset()
    assert all(torch.isfinite(x).all() for x in fast)
    for got, want in zip(fast, slow):
        assert rel(got, want) < 0.03, method  # bf16; a top-k tie may flip one selected row
    assert rel(attn, attn_ref) < 0.03


def test_int8_dense_close_to_bf16(decoder):
    _, want, _ = run("dense", {}, decoder)
    _, got, _ = run("dense", {}, decoder, kv_dtype="int8")
    assert rel(got[-1], want[-1]) < 0.05


def test_offload_over_pinned_memory_counts_bytes(decoder):
    _, want, _ = run("dense", {}, decoder)
    e, got, _ = run("dense", {}, decoder, offload=0.5)
    assert all(rel(g, w) < 0.02 for g, w in zip(got, want))
    assert e.method.kv.layers[0].host["k"].is_pinned()
    e.pcie.reset()
    e.step()
    per_layer, row = B * CFG.n_kv_heads, 2 * CFG.head_dim * 2  # bf16 K and V
    host = lambda L: min(math.floor(0.5 * L), L - 1)  # noqa: E731
    # the first layer fetches its block after its append (host(L) rows); layers 1.. take blocks
    # prefetched before their append (host(L − 1) rows); nothing is prefetched for the next step
    L = e.length
    assert e.pcie_bytes["h2d"] == per_layer * ((LAYERS - 1) * host(L - 1) + host(L)) * row


def test_measure_records_on_gpu():
    rec = measure("sparq", seq=8192, batch=1, model=MODEL, n_layers=2, params={"k": 512}, steps=10, warmup=3)
    assert rec["fits"] and rec["device"].startswith("NVIDIA") and rec["timer"].startswith("cuda events")
    assert rec["dtype"] == "bf16" and rec["kv_dtype"] == "bf16" and rec["contexts"] == [8187, 8196]
    assert 0 < rec["attention"]["latency_s"] < rec["latency_s"] < 1.0
    assert rec["memory_bytes"] > rec["kv_bytes"] + rec["weight_bytes"] * 0.99
    assert rec["backends"]["sparq_scores_and_group@cuda"] == "kvsim.methods.sparq.kernels.sparq_scores_and_group"
    offloaded = measure("alisa", seq=4096, batch=1, model=MODEL, n_layers=2, steps=5, warmup=2, offload=True)
    assert offloaded["pcie"]["h2d"] > 0 and offloaded["pcie"]["d2h"] > 0


def test_measure_reports_out_of_memory_as_an_answer():
    rec = measure("dense", seq=1 << 20, batch=64, model=MODEL, n_layers=2, steps=2, warmup=1)
    assert rec["fits"] is False and "out of memory" in rec["error"]


def test_profiling_hook_runs_one_step():
    info = run_steps_for_profiling("quest", seq=4096, model=MODEL, n_layers=2, params={"budget": 512})
    assert info["seq"] == 4096 and info["device"].startswith("NVIDIA")
