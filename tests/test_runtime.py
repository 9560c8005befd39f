"""Runtime on CPU (fp32): a decode step against a plain torch decoder written here, every sparse
method with a full budget against dense, INT8, offload byte counts, measure() records."""
import json
import math

import pytest
import torch

from kvsim.methods import get_method
from kvsim.models import ModelConfig
from kvsim.records import flat_row
from kvsim.runtime import ops
from kvsim.runtime.engine import Engine
from kvsim.runtime.measure import measure, run_steps_for_profiling
from kvsim.runtime.registry import METHODS, resolve

TINY = ModelConfig(name="tiny-llama", family="llama", n_layers=5, d_model=256, n_heads=8, n_kv_heads=2,
                   head_dim=32, ffn_dim=512, vocab=1000, max_context=4096, mlp="swiglu", norm="rmsnorm",
                   source="test")
TINY_OPT = ModelConfig(name="tiny-opt", family="opt", n_layers=2, d_model=256, n_heads=8, n_kv_heads=8,
                       head_dim=32, ffn_dim=512, vocab=1000, max_context=4096, mlp="relu", norm="layernorm",
                       tied_embeddings=True, learned_positions=True, source="test")
B, PREFILL, MAX_SEQ = 2, 70, 96
THETA = 10000.0  # RoFormer / Llama-2 base; "tiny-llama" matches no family prefix


def engine(method="dense", params=None, cfg=TINY, prefill=PREFILL, **kw):
    e = Engine(cfg, method, params, batch=B, max_seq=MAX_SEQ, device="cpu", dtype="fp32", **kw)
    e.prefill_synthetic(prefill)
    return e


# ---- a plain torch decoder ---------------------------------------------------------------------
def rope(x, pos):
    """Rotate pairs (x_i, x_{i+d/2}) by pos·θ^(−2i/d), as complex numbers."""
    d = x.shape[-1]
    angle = pos * THETA ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double()) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], -1).float()


def norm(x, params, cfg):
    w, b = params
    if cfg.norm == "rmsnorm":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def lin(x, wb):
    w, b = wb
    return x @ w.T + (0 if b is None else b)


def reference_step(model, token, pos, cache):
    """One token through every layer; cache[i] = (K, V) [B,Hkv,n,d] with RoPE applied."""
    cfg = model.cfg
    H, Hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    x = model.embed[token] + (model.pos_embed[pos + 2] if cfg.learned_positions else 0)
    for i, p in enumerate(model.layers):
        q, k, v = lin(norm(x, p["norm1"], cfg), p["qkv"]).split([H * d, Hkv * d, Hkv * d], -1)
        q, k, v = q.reshape(B, H, d), k.reshape(B, Hkv, d), v.reshape(B, Hkv, d)
        if not cfg.learned_positions:
            q, k = rope(q, pos), rope(k, pos)
        K, V = (torch.cat([c, new[:, :, None]], 2) for c, new in zip(cache[i], (k, v)))
        cache[i] = (K, V)
        Kq, Vq = K.repeat_interleave(H // Hkv, 1), V.repeat_interleave(H // Hkv, 1)
        att = torch.softmax((q[:, :, None] @ Kq.transpose(-1, -2))[:, :, 0] / math.sqrt(d), -1)
        x = x + lin((att[:, :, None] @ Vq)[:, :, 0].reshape(B, H * d), p["o"])
        h = lin(norm(x, p["norm2"], cfg), p["up"])
        if cfg.mlp == "swiglu":
            gate, up = h.chunk(2, -1)
            h = gate * torch.sigmoid(gate) * up
        else:
            h = torch.relu(h)
        x = x + lin(h, p["down"])
    return norm(x, model.final_norm, cfg) @ model.lm_head.T


@pytest.mark.parametrize("cfg", [TINY, TINY_OPT], ids=["llama", "opt"])
def test_decode_steps_match_plain_torch_decoder(cfg):
    e = engine(cfg=cfg)
    kv = e.method.kv
    cache = [(kv.keys(i)[:, :, :PREFILL].clone(), kv.values(i)[:, :, :PREFILL].clone())
             for i in range(cfg.n_layers)]
    for step in range(3):
        token = torch.tensor([5 + step, 900 - step])
        got = e.step(token)
        want = reference_step(e.model, token, PREFILL + step, cache)
        assert got.shape == (B, cfg.vocab)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert e.length == PREFILL + 3


@pytest.fixture(scope="module")
def dense_run():
    e = engine()
    return [e.step(torch.tensor([t, t + 1])) for t in range(3)], e.attention_only_step()


@pytest.mark.parametrize("method,params", [("sparq", {"k": 8}), ("quest", {"budget": 32}),
                                           ("h2o", {"heavy": 8, "recent": 8}), ("streamingllm", {"recent": 16}),
                                           ("tidaldecode", {"k": 8}), ("duoattention", {"sink": 4, "recent": 8}),
                                           ("alisa", {}), ("adore", {"m": 32, "R": 2})])
def test_small_budget_is_not_dense(method, params, dense_run):
    e = engine(method, params)
    got = e.step(torch.tensor([0, 1]))
    assert torch.isfinite(got).all()
    assert (got - dense_run[0][0]).abs().max() > 1e-3


def test_int8_cache_is_close_to_fp32_and_half_the_bytes():
    exact, int8 = engine(), engine(kv_dtype="int8")
    alisa8 = engine("alisa", {"sparsity": 0.0, "kv_bits": 8})
    want = exact.step(torch.tensor([1, 2]))
    for e in (int8, alisa8):
        got = e.step(torch.tensor([1, 2]))
        assert (got - want).norm() / want.norm() < 0.02
    assert int8.kv_dtype_name == alisa8.kv_dtype_name == "int8"
    rows = TINY.n_layers * B * TINY.n_kv_heads * MAX_SEQ * 2  # K and V rows
    assert int8.kv_bytes == rows * (TINY.head_dim + 4)  # d int8 + fp16 scale and zero
    assert exact.kv_bytes == rows * TINY.head_dim * 4


def test_quantize_round_trip_within_half_a_step():
    x = torch.randn(3, 5, 64) * 3 + 1
    xq, scale, zero = ops.quantize_kv(x)
    assert xq.dtype == torch.int8 and scale.shape == zero.shape == x.shape[:-1]
    err = (ops.dequantize_kv(xq, scale, zero) - x).abs()
    assert (err <= 0.6 * scale.float()[..., None] + 1e-3).all()


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_offload_moves_the_expected_bytes_and_changes_nothing(fraction):
    ref, off = engine(), engine(offload=fraction)
    off.pcie.reset()
    steps, row = 4, 2 * TINY.head_dim * 4  # K and V of one token and KV head, fp32
    for t in range(steps):
        torch.testing.assert_close(off.step(torch.tensor([t, 3])), ref.step(torch.tensor([t, 3])))
    host = lambda L: min(math.floor(fraction * L), L - 1)  # noqa: E731  tokens on the host
    contexts = range(PREFILL + 1, PREFILL + steps + 1)
    pairs = TINY.n_layers * B * TINY.n_kv_heads
    # dense: every host row, every step; the first layer fetches its block after its append
    # (host(L) rows), a later one takes the block prefetched while the layer before it ran, before
    # its own append (host(L − 1) rows), the rest from the ring unless they left it (then fetched
    # too); a step prefetches nothing for the next one
    ring, per_layer = off.method.kv.layers[0].ring, B * TINY.n_kv_heads
    taken = lambda L: host(L) if host(L - 1) < L - ring else host(L - 1)  # noqa: E731
    fetched = sum(host(L) + taken(L) * (TINY.n_layers - 1) for L in contexts)
    moved_out = host(PREFILL + steps) - host(PREFILL)  # rows that left the device ring
    assert off.pcie_bytes["h2d"] == per_layer * fetched * row
    assert off.pcie_bytes["d2h"] == pairs * moved_out * row  # one block copy: no positions sent
    assert off.host_kv_bytes == pairs * math.floor(fraction * MAX_SEQ) * row


@pytest.mark.parametrize("method,params", [("alisa", {}), ("alisa", {"kv_bits": 8}), ("sparq", {"k": 8}),
                                           ("quest", {"budget": 32}), ("tidaldecode", {"k": 8})])
def test_offloaded_sparse_methods_fetch_only_selected_rows(method, params):
    ref, off = engine(method, params), engine(method, params, offload=0.5)
    dense_off = engine(offload=0.5)
    for e in (off, dense_off):
        e.pcie.reset()
    for t in range(2):
        torch.testing.assert_close(off.step(torch.tensor([t, 3])), ref.step(torch.tensor([t, 3])))
        dense_off.step(torch.tensor([t, 3]))
    assert 0 < off.pcie_bytes["h2d"] < dense_off.pcie_bytes["h2d"]


@pytest.mark.parametrize("method,params", [("h2o", {}), ("streamingllm", {}), ("duoattention", {}), ("adore", {}),
                                           ("tidaldecode", {"correction_period": 2})])
def test_offload_refused_where_the_layout_is_not_positional(method, params):
    with pytest.raises(ValueError, match="offload"):
        engine(method, params, offload=True)


def test_measure_on_cpu_returns_a_complete_record():
    rec = measure("sparq", seq=64, batch=B, model=TINY, n_layers=2, params={"k": 8}, steps=4, warmup=1,
                  device="cpu", offload=0.5)
    assert rec["source"] == "measured" and rec["fits"]
    assert rec["model"] == "tiny-llama" and rec["method"] == "sparq" and rec["n_layers"] == 2
    assert rec["seq"] == 64 and rec["contexts"] == [62, 65] and rec["batch"] == B
    assert rec["dtype"] == rec["kv_dtype"] == "fp32" and rec["params"] == {"k": 8}
    assert rec["resolved_params"] == {"r": 4, "k": 8, "local": 2}
    assert rec["latency_s"] > 0 and rec["attention"]["latency_s"] > 0
    assert rec["pcie_bytes"] == rec["pcie"]["h2d"] + rec["pcie"]["d2h"] > 0
    assert rec["memory_bytes"] >= rec["kv_bytes"] + rec["weight_bytes"] - 1
    assert rec["torch"] == torch.__version__ and rec["date"] and rec["device"].startswith("cpu")
    assert "gathered_decode_attention@cpu" in rec["backends"]
    json.dumps(rec)
    row = flat_row(rec)
    assert row["attention_latency_s"] == rec["attention"]["latency_s"] and row["pcie_bytes"] == rec["pcie_bytes"]


def test_profiling_hook_runs_one_step_at_the_context():
    info = run_steps_for_profiling("quest", seq=40, batch=1, model=TINY, n_layers=3, params={"budget": 16},
                                   warmup=2, device="cpu")
    assert info["seq"] == 40 and info["resolved_params"] == {"page_size": 16, "budget": 16}


def test_params_follow_kvsim_defaults():
    for name in METHODS:
        record, values = resolve(name, {}, TINY, context=1600)
        kv = get_method(name, {}).model_dump()
        assert set(values) == set(kv)
        assert record == get_method(name, {}).model_dump(exclude_none=True)
        assert all(values[k] == v for k, v in kv.items() if v is not None)
    assert resolve("sparq", {}, TINY, 1600)[1] == {"r": 4, "k": 100, "local": 25}
    assert resolve("h2o", {}, TINY, 1600)[1] == {"heavy": 160, "recent": 160}
    assert resolve("duoattention", {}, TINY, 1600)[1]["retrieval_ratio"] == 0.5  # GQA
    assert resolve("duoattention", {}, TINY_OPT, 1600)[1]["retrieval_ratio"] == 0.25  # MHA
    assert resolve("sparq", {"k": "1k"}, TINY, 1600)[1]["k"] == 1024


def test_engine_errors_name_the_problem():
    with pytest.raises(Exception, match="unknown parameter"):
        Engine(TINY, "quest", {"pages": 3}, device="cpu")
    with pytest.raises(ValueError, match="unknown method"):
        Engine(TINY, "magic", device="cpu")
    with pytest.raises(RuntimeError, match="prefill_synthetic"):
        Engine(TINY, device="cpu").step()
    with pytest.raises(ValueError, match="max_seq"):
        engine(prefill=MAX_SEQ)
    e = engine(prefill=MAX_SEQ - 1)
    e.step()
    with pytest.raises(ValueError, match="exceeds max_seq"):
        e.step()


def test_lengths_a_captured_graph_reads_are_never_freed(monkeypatch):
    """A length tensor handed out while a CUDA graph is being captured stays referenced after
    the length cache turns over many times (the replays read its address; issue 14's illegal
    access): simulated on the CPU by declaring the stream capturing."""
    from kvsim.runtime import cache as cache_module

    e = engine("dense")
    kv = e.method.kv
    monkeypatch.setattr(cache_module, "capturing", lambda device: True)
    captured = kv.seq_lens(12345)
    address = captured.data_ptr()
    monkeypatch.setattr(cache_module, "capturing", lambda device: False)
    for n in range(100):  # the cache keeps 9 lengths: it is cleared many times over
        kv.seq_lens(n)
    assert 12345 not in kv._lens and kv._captured[12345].data_ptr() == address
    assert kv.seq_lens(7).data_ptr() == kv.seq_lens(7).data_ptr()  # still a cache


def test_every_length_a_captured_offloaded_step_reads_outlives_the_capture(monkeypatch):
    """measure.py's sequence (warm-up, timed and synced steps, then the attention-only call and
    the step each run once and once more captured), emulated on the CPU with the stream declared
    capturing for the captured calls: Quest offloaded at F = 0.9 reads more than 9 lengths a
    step, so the cache turns over inside a capture; every length read while capturing must
    still be held when the captures end (issue 14's illegal access under graph replay)."""
    from kvsim.runtime import cache as cache_module
    from kvsim.runtime import measure as measure_module

    engine, _ = measure_module._engine("quest", 2048, 2, TINY, 4, {"budget": 256}, 5, spare=6, device="cpu",
                                       dtype="fp32", offload=0.9)
    measure_module._time_steps(engine, 6, 2, False)
    measure_module.synced_times(engine, 6, False)
    capturing, read = [False], []
    monkeypatch.setattr(cache_module, "capturing", lambda device: capturing[0])
    seq_lens = cache_module.KVCache.seq_lens
    monkeypatch.setattr(cache_module.KVCache, "seq_lens",
                        lambda self, n: read.append(seq_lens(self, n)) or read[-1] if capturing[0] else seq_lens(self, n))
    tokens = torch.randint(TINY.vocab, (2,))
    for call in (engine.attention_only_step, lambda: engine.step(tokens)):
        call()
        capturing[0] = True
        call()
        capturing[0] = False
    kv = engine.method.kv
    held = {id(t) for t in (*kv._lens.values(), *kv._captured.values())}
    assert len({int(t[0]) for t in read}) > 9  # the cache turned over while capturing
    assert all(id(t) in held for t in read)
