"""Tensor-parallel runtime on the CPU: 2 gloo processes decode what one process decodes, for every
method (fp32: the sharded sums differ only in rounding order), with real (small) budgets."""
import os

import pytest
import torch

from kvsim.models import ModelConfig
from kvsim.runtime.engine import Engine

WORLD, B, PREFILL, MAX_SEQ, STEPS = 2, 2, 70, 96, 3
TINY = ModelConfig(name="tiny-llama", family="llama", n_layers=4, d_model=128, n_heads=8, n_kv_heads=4,
                   head_dim=16, ffn_dim=256, vocab=512, max_context=4096, mlp="swiglu", norm="rmsnorm",
                   source="test")
TINY_OPT = ModelConfig(name="tiny-opt", family="opt", n_layers=2, d_model=128, n_heads=4, n_kv_heads=4,
                       head_dim=32, ffn_dim=256, vocab=512, max_context=4096, mlp="relu", norm="layernorm",
                       tied_embeddings=True, learned_positions=True, source="test")
CASES = [  # (id, model, method, params): budgets below the context, so selection matters
    ("dense", TINY, "dense", {}), ("dense-opt", TINY_OPT, "dense", {}),
    ("sparq", TINY, "sparq", {"k": 8, "r": 4, "local": 2}), ("quest", TINY, "quest", {"budget": 32}),
    ("h2o", TINY, "h2o", {"heavy": 8, "recent": 8}), ("streamingllm", TINY, "streamingllm", {"recent": 16}),
    ("tidaldecode", TINY, "tidaldecode", {"k": 8}),  # layers 0-1 dense, 2 selects, 3 sparse
    ("duoattention", TINY, "duoattention", {"sink": 4, "recent": 8}),
    ("duoattention-0.75", TINY, "duoattention", {"sink": 4, "recent": 8, "retrieval_ratio": 0.75}),
    ("alisa", TINY, "alisa", {}), ("alisa-int8", TINY, "alisa", {"kv_bits": 8}),
    ("adore", TINY, "adore", {"m": 32, "R": 2}),
]
TOL = dict(rtol=1e-4, atol=1e-4)  # fp32; test_runtime.py compares its decoders at the same tolerance


def tokens(step):
    return torch.tensor([5 + step, 400 - step])


def decode(engine, sharded=False):
    """STEPS decode steps' logits, then an attention-only call's output (all heads)."""
    out = [engine.step(tokens(step)) for step in range(STEPS)]
    att = engine.attention_only_step()
    out.append(engine.gather_heads(att) if sharded else att)
    return out


def _rank(rank, world, device, path):
    """One rank (runtime/tp_launch.py started it, the gloo process group is up)."""
    from kvsim.runtime.tp import Comm, TPEngine
    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"  # set in every rank before the group started
    comm, results = Comm(), {}
    for name, cfg, method, params in CASES:
        engine = TPEngine(cfg, method, params, batch=B, max_seq=MAX_SEQ, device=device, dtype="fp32", comm=comm)
        engine.prefill_synthetic(PREFILL)
        results[name] = decode(engine, sharded=True) + [engine.kv_bytes]
    if rank == 0:
        torch.save(results, path)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    from kvsim.runtime.tp_launch import run_ranks
    path = tmp_path_factory.mktemp("tp") / "results.pt"
    run_ranks(_rank, WORLD, "cpu", args=(str(path),), timeout_s=300)
    return torch.load(path)


@pytest.mark.parametrize("name,cfg,method,params", CASES, ids=[c[0] for c in CASES])
def test_two_ranks_decode_what_one_process_decodes(sharded, name, cfg, method, params):
    single = Engine(cfg, method, params, batch=B, max_seq=MAX_SEQ, device="cpu", dtype="fp32")
    single.prefill_synthetic(PREFILL)
    want = decode(single)
    *got, rank0_kv_bytes = sharded[name]
    for step, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {step}"
        torch.testing.assert_close(g, w, **TOL, msg=lambda m: f"{name}, output {step}: {m}")
    assert 0 < rank0_kv_bytes <= single.kv_bytes
    if method in ("dense", "quest", "sparq"):  # state all per KV head: each rank holds 1/N
        assert rank0_kv_bytes * WORLD == single.kv_bytes


def test_sparse_outputs_differ_from_dense(sharded):
    """The budgets above select: a sharded method that silently ran dense would fail here."""
    dense = sharded["dense"][0]
    for name in ("sparq", "quest", "h2o", "streamingllm", "tidaldecode", "alisa", "adore"):
        assert (sharded[name][0] - dense).abs().max() > 1e-3, name


@pytest.mark.parametrize("ratio,want", [(0.5, [0.5] * 4), (0.25, [0.5, 0.5, 0.0, 0.0]), (0.75, [1.0, 1.0, 0.5, 0.5])])
def test_duoattention_retrieval_heads_are_dealt_over_the_ranks(ratio, want):
    from kvsim.runtime.tp_methods import kv_head_layout, shard_params
    cfg = ModelConfig(name="m", family="llama", n_layers=1, d_model=64, n_heads=16, n_kv_heads=8, head_dim=8,
                      ffn_dim=64, vocab=64, max_context=64, mlp="swiglu", norm="rmsnorm", source="test")
    layout = kv_head_layout("duoattention", 8, 4)
    assert layout == [[0, 4], [1, 5], [2, 6], [3, 7]]
    got = [shard_params("duoattention", {"retrieval_ratio": ratio}, heads, cfg)["retrieval_ratio"] for heads in layout]
    assert got == want  # the first ⌈ρ·8⌉ KV heads retrieve, ±1 per rank


def test_allreduce_fit_recovers_latency_and_bandwidth():
    """benchmarks/bench_allreduce.py's fit on times made from a known link: 12 µs + bytes / 300 GB/s."""
    import numpy as np
    from kvsim.fits import allreduce_fit as fit, allreduce_profile_time as profile_time
    from kvsim.profiles import load_profile
    sent = np.array([2.0**p for p in range(10, 29, 2)])
    latency, effective = fit(sent, 12e-6 + sent / 300e9)
    assert latency == pytest.approx(12e-6, rel=1e-6) and effective == pytest.approx(300e9, rel=1e-6)
    h200 = load_profile("h200")  # kvsim's own time: sent bytes over bandwidth × efficiency + latency
    link = h200.interconnect
    want = (2 * (3 / 4) * 2**26 / (link.bandwidth_Bps.value * link.efficiency.value) + link.latency_s.value
            + 2 * (4 - 1) * link.step_latency_s.value)  # the ring's 2·(N−1) steps (kvsim.topology)
    assert profile_time(h200, 2**26, 4) == pytest.approx(want, rel=1e-9)


def test_tp_record_takes_the_slowest_rank_and_graph_replays():
    """benchmarks/measure_tp.py's record from two ranks' results: per call the slower rank, the
    median over calls; graph replays where every rank has them; memory the largest rank's."""
    from argparse import Namespace
    from kvsim.runtime.tp_record import record_of
    args = Namespace(gpus=2, model="llama-3.1-8b", layers=2, steps=3, warmup=1)
    rank = {"eager": [1.0, 10.0, 1.0, 12.0, 1.0, 11.0], "graphed": [], "how": "not asked", "replayed": {},
            "memory": 100, "memory_how": "torch.cuda.max_memory_allocated", "kv_bytes": 40, "weight_bytes": 50,
            "contexts": [10, 12], "prefill": 8, "dtype": torch.bfloat16, "kv_dtype": "bf16",
            "params_record": {}, "params": {}}
    other = {**rank, "eager": [2.0, 9.0, 2.0, 13.0, 2.0, 9.0], "memory": 120}
    config = {"method": "dense", "seq": 12, "batch": 4, "params": {}}
    eager = record_of(config, args, [rank, other], "cpu", "h200-sxm", {})
    assert eager["latency_s"] == 11.0 and eager["attention"]["latency_s"] == 2.0  # max per call: 10, 13, 11
    assert eager["memory_bytes"] == 120 and eager["gpus"] == 2 and "eager" in eager["timer"]
    graphed = [dict(r, graphed=[0.5, 4.0, 0.5, 5.0, 0.5, 6.0], replayed={"step": 20, "attention": 21})
               for r in (rank, other)]
    replay = record_of(config, args, graphed, "cpu", "h200-sxm", {})
    assert replay["latency_s"] == 5.0 and replay["timed_contexts"] == {"step": 20, "attention": 21}
    assert replay["eager"]["latency_s"] == 11.0 and "graph replay" in replay["timer"]
