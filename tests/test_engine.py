"""The eager engine: host issue and GPU streams (kvsim.roofline), and each method's host calls
in the cost model against what the reference runtime issues, counted under the Triton
interpreter (runtime/launches.py LaunchCounter), on small shapes."""
from dataclasses import replace

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import numpy as np
import pytest

from kvsim.cost import Cost, Op
from kvsim.errors import KvsimError
from kvsim.profiles import load_profile
from kvsim.models import ModelConfig
from kvsim.predict import predict
from kvsim.roofline import graph_replay_time, step_time

SMALL = ModelConfig(name="tiny-llama", family="llama", n_layers=4, d_model=256, n_heads=8, n_kv_heads=2,
                    head_dim=32, ffn_dim=512, vocab=1000, max_context=4096, mlp="swiglu", norm="rmsnorm",
                    source="test")
BATCH, PREFILL, MAX_SEQ = 2, 70, 96
# budgets below the context, so every method runs its selection, eviction or release path
PARAMS = {"dense": {}, "streamingllm": {"sink": 4, "recent": 20}, "h2o": {"heavy": 16, "recent": 16},
          "adore": {"m": 40, "R": 3}, "tidaldecode": {"k": 16, "reselect_layer": 3},
          "sparq": {"k": 24, "r": 8, "local": 4}, "quest": {"budget": 32, "page_size": 8},
          "alisa": {}, "duoattention": {"sink": 4, "recent": 16}}
KINDS = {"torch": "torch_calls", "torch_gemm": "gemm_calls", "torch_host": "torch_host_calls",
         "triton": "triton_launches", "triton_args": "triton_args", "sync": "host_syncs"}


def runtime_counts(method: str) -> tuple[dict, dict]:
    """What the runtime's step and attention-only step issue, Triton kernels forced on CPU."""
    from kvsim.runtime import ops
    from kvsim.runtime.engine import Engine
    from kvsim.runtime.launches import count_launches
    cuda_attr = ops._kernel_attr
    ops._kernel_attr = lambda module, name, device_type: cuda_attr(module, name, "cuda")
    ops.reset()
    try:
        engine = Engine(SMALL, method, PARAMS[method], batch=BATCH, max_seq=MAX_SEQ, device="cpu", dtype="bf16")
        engine.prefill_synthetic(PREFILL)
        engine.attention_only_step(), engine.step()  # warm, as measure() times them
        attention = count_launches(engine.attention_only_step)
        step = count_launches(engine.step)
    finally:
        ops._kernel_attr = cuda_attr
        ops.reset()
    return step, attention


def model_counts(cost: Cost) -> dict:
    return {kind: float(cost.total(field)) for kind, field in KINDS.items()}


def attention_only_extra(method: str) -> dict:
    """Calls the runtime's attention-only step makes that no decode step does: the context
    length tensor at a context not seen yet (≤ 1 torch call); ADORE's zero chunk inputs (two
    torch calls, two views) and its last row taken per layer (a view)."""
    if method == "adore":
        return {"torch": (2, 3), "torch_host": (2 + SMALL.n_layers, 2 + SMALL.n_layers)}
    return {"torch": (0, 1)}


@pytest.mark.parametrize("method", list(PARAMS))
def test_host_calls_match_the_runtime(method):
    step, attention = runtime_counts(method)
    pred = predict("h100-sxm", method, seq=PREFILL + 2, batch=BATCH, model=SMALL, dtype="bf16", **PARAMS[method])
    modelled = model_counts(pred.cost)
    for kind, count in step.items():  # Quest's page-metadata calls are an average over a page
        assert abs(modelled[kind] - count) < 1, (kind, modelled[kind], count)
    modelled = model_counts(pred.cost.attention())
    extra = attention_only_extra(method)
    for kind, count in attention.items():
        low, high = extra.get(kind, (0, 0))
        assert low <= count - modelled[kind] <= high, (kind, modelled[kind], count)


H100 = load_profile("h100-sxm")


def _host(**values):
    from kvsim.hardware import Sourced
    src = lambda v: Sourced(value=v, source="test value")  # noqa: E731
    launch = {k: src(values[k]) for k in ("torch", "torch_gemm", "torch_host", "triton")}
    return H100.host.model_copy(update={"launch_s": launch, "triton_arg_s": src(values["arg"]),
                                        "sync_s": src(values["sync"]), "python_s": None, "probe_s": None})


# the engine's laws on known host costs (the shipped ones are fitted and may be zero for a kind)
HOSTED = H100.model_copy(update={"host": _host(torch=7e-6, torch_gemm=18e-6, torch_host=0.0, triton=10e-6,
                                               arg=0.0, sync=5e-6)})


def layered(host_calls: float, gpu_bytes: float, layers: int = 4, syncs: float = 0.0) -> Cost:
    """Two ops per layer and one after the layers; each op ``host_calls`` Triton launches."""
    op = Op("layers/x", "attention", hbm_read=gpu_bytes).issued(triton=host_calls, syncs=syncs)
    tail = Op("tail", "linear", hbm_read=gpu_bytes).issued(triton=host_calls)
    return Cost((op.scaled(layers), replace(op, name="layers/y").scaled(layers), tail))


def test_graphs_is_the_default_and_ignores_host_calls():
    cost = layered(100.0, 1e9)
    assert step_time(cost, H100).latency_s == step_time(cost, H100, "graphs", 4).latency_s
    assert step_time(cost, H100).engine == "graphs"


@pytest.mark.parametrize("calls, nbytes", [(1.0, 1e9), (1.0, 1e5), (200.0, 1e9), (200.0, 1e5), (20.0, 3e7)])
def test_eager_lies_between_the_larger_stream_and_their_sum(calls, nbytes):
    cost = layered(calls, nbytes)
    kernels = float(step_time(cost, H100).latency_s) - graph_replay_time(H100)  # back to back, no replay
    eager = step_time(cost, H100, "eager", 4)
    assert eager.latency_s >= max(kernels, float(eager.host_s)) - 1e-12
    assert eager.latency_s <= kernels + float(eager.host_s) + 1e-12


def test_eager_gpu_bound_pays_only_the_first_launch_and_host_bound_only_the_last_kernel():
    launch = HOSTED.host.launch_s["triton"].value
    gpu_bound = layered(1.0, 1e9)
    graphs = float(step_time(gpu_bound, HOSTED).latency_s) - graph_replay_time(HOSTED)  # the kernels back to back
    assert float(step_time(gpu_bound, HOSTED, "eager", 4).latency_s) == pytest.approx(graphs + launch)
    host_bound = layered(500.0, 1e5)
    eager = step_time(host_bound, HOSTED, "eager", 4)
    last = float(step_time(Cost((host_bound.ops[-1],)), HOSTED).latency_s) - graph_replay_time(HOSTED)
    assert float(eager.latency_s) == pytest.approx(float(eager.host_s) + last)


def test_a_sync_in_every_layer_stops_the_host_running_ahead():
    free, synced = layered(1.0, 1e9), layered(1.0, 1e9, syncs=1.0)
    graphs = float(step_time(free, HOSTED).latency_s) - graph_replay_time(HOSTED)  # the kernels back to back
    launch, sync = HOSTED.host.launch_s["triton"].value, HOSTED.host.sync_s.value
    assert float(step_time(free, HOSTED, "eager", 4).latency_s) == pytest.approx(graphs + launch)
    # each of the 8 layer ops: issued, run, waited for; the tail issued while nothing runs
    synced_s = float(step_time(synced, HOSTED, "eager", 4).latency_s)
    assert synced_s == pytest.approx(graphs + 8 * (launch + sync) + launch)
    some = float(step_time(layered(1.0, 1e9, syncs=0.5), HOSTED, "eager", 4).latency_s)
    assert some == pytest.approx(graphs + launch + 0.5 * sync)  # host time only, while it runs ahead


def test_eager_is_vectorized_and_never_faster_than_graphs():
    seq, batch = np.array([[4096.0], [131072.0]]), np.array([[1.0, 8.0, 32.0]])
    for method in PARAMS:
        graphs = predict("h100-sxm", method, seq=seq, batch=batch)
        eager = predict("h100-sxm", method, seq=seq, batch=batch, engine="eager")
        assert eager.latency_s.shape == (2, 3)
        assert np.all(eager.latency_s >= graphs.latency_s)
        assert np.all(eager.attention()["latency_s"] >= graphs.attention()["latency_s"])
        assert np.all(eager.attention()["latency_s"] <= eager.latency_s)


def test_eager_needs_measured_launch_costs_and_a_known_engine():
    with pytest.raises(KvsimError, match="host.launch_s"):
        predict("a100-80gb-sxm", "dense", seq=4096, engine="eager")
    with pytest.raises(KvsimError, match="unknown engine"):
        predict("h100-sxm", "dense", seq=4096, engine="compiled")


def test_validate_eager_compares_the_eager_timings():
    from kvsim.records import read_jsonl
    from kvsim.validate import compare, summarize
    records = [r for r in read_jsonl("benchmarks/results/h100-sweep.jsonl") if r["method"] in ("dense", "h2o")][:6]
    without = dict(records[0])
    without.pop("eager")
    rows = compare(records + [without], engine="eager")
    assert len(rows) == len(records)  # a record without eager timings is not compared
    for row in rows:
        assert row.measured["latency"] == row.record["eager"]["latency_s"]
        assert row.measured["attention_latency"] == row.record["eager"]["attention_latency_s"]
        graphs = compare([row.record])[0]
        # at least the kernels back to back (a backlogged eager call pays no launch gaps; its steps
        # attend a few rows fewer than the replayed one, and a replay adds its fixed cost)
        assert row.predicted["latency"] >= 0.99 * (graphs.predicted["latency"] - graph_replay_time(H100))
    assert summarize(rows)["overall"]["latency"]["n"] == len(records)


def test_cli_engine_flag(tmp_path):
    import subprocess
    import sys
    run = lambda *args: subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True)  # noqa: E731
    out = run("predict", "--hw", "h100", "--seq", "8k", "--engine", "eager")
    assert out.returncode == 0 and "engine eager" in out.stdout.splitlines()[0]
    assert "engine graphs" in run("predict", "--hw", "h100", "--seq", "8k").stdout.splitlines()[0]
    bad = run("predict", "--hw", "a100", "--seq", "8k", "--engine", "eager")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "host.launch_s" in bad.stderr
    sweep = run("sweep", "--hw", "h100,a100", "--seq", "4k", "--engine", "eager", "--out", str(tmp_path / "s.csv"))
    assert sweep.returncode == 0 and "skipped dense on a100" in sweep.stderr
    assert run("validate", "benchmarks/results/h100-sweep.jsonl", "--engine", "eager").stdout.startswith("engine eager")


def test_measure_records_what_a_step_issues():
    from kvsim.runtime.launches import LAUNCH_KINDS
    from kvsim.runtime.measure import measure
    rec = measure("dense", seq=40, batch=1, model=SMALL, n_layers=2, steps=2, warmup=1, device="cpu")
    for call in ("step", "attention"):
        assert set(rec["launches"][call]) == set(LAUNCH_KINDS)
    # four projections a layer and the LM head; on CPU the torch references' attention matmuls too
    assert rec["launches"]["step"]["torch_gemm"] == 2 * 4 + 1 + 2 * 2
    assert rec["launches"]["attention"]["torch_gemm"] == 2 * 2 and rec["launches"]["step"]["triton"] == 0


def test_eager_takes_contexts_where_some_ops_are_constant():
    """A context array where a method's ops are partly constant (SparQ with a fixed k: its gather
    does not grow) gives one eager time per context, finite and positive."""
    seqs = np.arange(8190.0, 8200.0)
    pred = predict("h100-sxm", "sparq", seq=seqs, batch=16, model="llama-3.1-8b", k=1024, r=16, engine="eager")
    latency = np.broadcast_to(pred.latency_s, seqs.shape)
    assert np.all(np.isfinite(latency)) and np.all(latency > 0)


def test_every_issued_call_pays_the_runtime_python_once():
    """host.python_s adds once per torch call (any torch kind) and once per Triton launch, not
    per argument or sync."""
    from kvsim.hardware import Sourced
    from kvsim.host_costs import host_issue_time
    python = {"torch": Sourced(value=4e-6, source="test value"), "triton": Sourced(value=9e-6, source="test value")}
    with_python = HOSTED.model_copy(update={"host": HOSTED.host.model_copy(update={"python_s": python})})
    op = Op("layers/x", "attention", hbm_read=1e6).issued(torch=3, gemm=2, torch_host=5, triton=4,
                                                           args=40, syncs=1)
    base = float(host_issue_time(op, HOSTED))
    assert float(host_issue_time(op, with_python)) == pytest.approx(base + (3 + 2 + 5) * 4e-6 + 4 * 9e-6)
    cost = Cost((op.scaled(4),))
    assert float(step_time(cost, with_python, "eager", 4).host_s) > float(step_time(cost, HOSTED, "eager", 4).host_s)


def test_host_costs_scale_with_the_records_host_clock():
    """at_host_probe: every host cost × probe / host.probe_s; the GPU side untouched; no probe on
    either side leaves the profile as it is."""
    from kvsim.hardware import Sourced
    from kvsim.host_costs import at_host_probe, host_issue_time
    hw = HOSTED.model_copy(update={"host": HOSTED.host.model_copy(
        update={"python_s": {"torch": Sourced(value=3e-6, source="test value")},
                "probe_s": Sourced(value=2e-6, source="test value")})})
    op = Op("layers/x", "attention", hbm_read=1e6).issued(torch=3, triton=4, args=40, syncs=1)
    slow = at_host_probe(hw, 3e-6)
    assert float(host_issue_time(op, slow)) == pytest.approx(1.5 * float(host_issue_time(op, hw)))
    assert step_time(layered(1.0, 1e9), slow).latency_s == step_time(layered(1.0, 1e9), hw).latency_s
    assert at_host_probe(hw, 0.0) is hw and at_host_probe(HOSTED, 3e-6) is HOSTED
    host_bound = layered(500.0, 1e5)
    assert float(step_time(host_bound, slow, "eager", 4).latency_s) > float(step_time(host_bound, hw, "eager", 4).latency_s)


def test_validate_predicts_a_record_at_its_host_clock():
    from kvsim.hardware import Sourced
    from kvsim.records import read_jsonl
    from kvsim.validate import predicted_values
    hw = H100.model_copy(update={"host": H100.host.model_copy(update={"probe_s": Sourced(value=5e-6, source="test value")})})
    record = next(r for r in read_jsonl("benchmarks/results/h100-sweep.jsonl") if r["method"] == "dense" and r["batch"] == 1)
    plain = predicted_values(record, hw, "eager")["latency"]
    slow = dict(record, eager=dict(record["eager"], host_probe_s=10e-6))
    assert predicted_values(slow, hw, "eager")["latency"] > 1.5 * plain  # host-bound: twice the host time
    assert predicted_values(slow, hw)["latency"] == predicted_values(record, hw)["latency"]  # graphs: no host


def test_measure_records_the_host_clock_of_its_eager_timings():
    from kvsim.runtime.measure import measure
    rec = measure("dense", seq=40, batch=1, model=SMALL, n_layers=2, steps=2, warmup=1, device="cpu")
    assert 0 < rec["eager"]["host_probe_s"] < 1e-2


class _Held:
    """A tensor's place as runtime/launches.py reads it: its device and whether it is pinned."""

    def __init__(self, device: str, pinned: bool = False):
        self.device, self._pinned = __import__("torch").device(device), pinned

    def is_pinned(self) -> bool:
        return self._pinned


class _Aten:
    tags = ()

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name


@pytest.mark.parametrize("pinned,non_blocking,syncs", [(True, True, False), (True, False, True),
                                                       (False, True, True), (False, False, True)])
def test_only_a_non_blocking_copy_into_pinned_memory_leaves_the_host_free(pinned, non_blocking, syncs):
    """A device-to-host copy makes the host wait, except one into pinned memory with
    non_blocking (runtime/offload.py's evictions): the counter calls that one a launch."""
    from kvsim.runtime.launches import _reads_back

    args = (_Held("cpu", pinned), _Held("cuda"), non_blocking)
    assert _reads_back(_Aten("aten.copy_.default"), args, {}) is syncs
    assert _reads_back(_Aten("aten.copy_.default"), args[:2], {"non_blocking": non_blocking}) is syncs
    assert _reads_back(_Aten("aten.copy_.default"), (_Held("cuda"), _Held("cpu", pinned), non_blocking), {}) is False
