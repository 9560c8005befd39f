"""How a sweep runs its configurations (kvsim.runtime.sweep_process: the memory grid, fresh
processes, replaced records) and the allocator holes of the runtime's weights, without a GPU."""
import json
import subprocess
import types

import kvsim.runtime.sweep_process as sweep
from kvsim.methods import METHODS
from kvsim.models import load_model
from kvsim.predict import predict
from kvsim.runtime.allocator_holes import weight_holes


def test_the_memory_grid_has_every_method_at_each_case_and_kvsim_predicts_them():
    configs = list(sweep.memory_grid(list(METHODS)))
    assert len(configs) == len(METHODS) * len(sweep.MEMORY_CASES)
    assert {c["model"] for c in configs} == {case[0] for case in sweep.MEMORY_CASES}
    for c in configs:
        model = load_model(c["model"]).model_copy(update={"n_layers": c["layers"]})
        pred = predict("h100-sxm", method=c["method"], seq=c["seq"], batch=c["batch"], model=model, **c["params"])
        assert float(pred.memory_bytes) < 0.9 * pred.gpu_capacity_bytes, c


def test_a_fresh_record_comes_from_kvsim_measure_in_its_own_process(monkeypatch):
    calls = []

    def fake_run(command, **kw):
        calls.append(command)
        record = {"source": "measured", "latency_s": 1e-3, "command": "kvsim measure ..."}
        return subprocess.CompletedProcess(command, 0, "progress\n" + json.dumps(record) + "\n", "")

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    args = types.SimpleNamespace(steps=10, warmup=3)
    config = {"method": "quest", "seq": 65536, "batch": 8, "model": "llama-2-7b", "params": {"budget": 2048},
              "offload": 0.0}
    record = sweep.fresh_record(args, config, 8, "h100-sxm", "unused.jsonl")
    assert record["latency_s"] == 1e-3
    command = calls[0]
    assert command[1:4] == ["-m", "kvsim", "measure"] and "--no-ncu" in command
    assert command[command.index("--param") + 1] == "budget=2048" and command[command.index("--layers") + 1] == "8"
    monkeypatch.setattr(sweep.subprocess, "run", lambda c, **kw: subprocess.CompletedProcess(c, 1, "", "CUDA error"))
    failed = sweep.fresh_record(args, config, 8, "h100-sxm", "unused.jsonl")
    assert failed["source"] == "failed" and "CUDA error" in failed["error"]


def test_weight_draws_leave_the_holes_the_max_batch_runs_reserve():
    # benchmarks/results/h*-memory.jsonl: peak reserved less peak allocated at the largest batch
    assert 4.9e9 < weight_holes("llama-2-13b") < 5.3e9  # measured 5.05 (H100) and 5.18 GB (H200)
    assert 2.4e9 < weight_holes("llama-2-7b") < 2.8e9  # 2.59 and 2.52 GB
    assert weight_holes("llama-3.1-8b") < weight_holes("llama-2-7b")  # 0.94-1.61 GB


def test_a_replay_slower_than_its_eager_step_is_measured_again_fresh(monkeypatch):
    slow = {"source": "measured", "timer": "cuda events, cuda graph replay", "latency_s": 5.2e-3,
            "eager": {"latency_s": 4.7e-3}}
    assert sweep.slow_replay(slow)
    assert not sweep.slow_replay({**slow, "latency_s": 4.5e-3})
    assert not sweep.slow_replay({**slow, "timer": "cuda events, eager (not asked)"})
    monkeypatch.setattr(sweep, "fresh_record", lambda *a: {"source": "measured", "latency_s": 4.56e-3})
    record = sweep.remeasured(None, {}, 8, "h100-sxm", "unused", slow)
    assert record["latency_s"] == 4.56e-3 and record["in_sweep"]["latency_s"] == 5.2e-3
    monkeypatch.setattr(sweep, "fresh_record", lambda *a: {"source": "failed"})
    assert sweep.remeasured(None, {}, 8, "h100-sxm", "unused", slow) is slow


def test_re_measured_records_replace_the_sweeps_and_keep_the_old_times():
    import pytest

    from kvsim.runtime.sweep_process import replaced
    from kvsim.errors import KvsimError
    base = {"source": "measured", "model": "llama-2-7b", "n_layers": 8, "method": "streamingllm", "params": {},
            "batch": 32, "seq": 65536, "dtype": "bf16", "kv_dtype": "bf16"}
    sweep = [{**base, "latency_s": 5.235e-3, "eager": {"latency_s": 4.75e-3}},
             {**base, "seq": 16384, "latency_s": 4.569e-3}, {"source": "failed", "seq": 1}]
    out = replaced(sweep, [{**base, "latency_s": 4.559e-3, "process": "fresh"}])
    assert out[0]["latency_s"] == 4.559e-3 and out[0]["replaced"]["latency_s"] == 5.235e-3
    assert out[1:] == sweep[1:]
    with pytest.raises(KvsimError):
        replaced(sweep, [{**base, "batch": 7, "latency_s": 1e-3}])
