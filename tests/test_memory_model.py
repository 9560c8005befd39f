"""kvsim's memory against the runtime's allocations: the resident list of a step and the
prefill's scratch beside the cache (kvsim.methods.base), checked against the committed GPU
records of the largest batch that runs (benchmarks/bench_memory.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from kvsim.methods.base import prompt_layer_bytes
from kvsim.models import load_model
from kvsim.predict import predict
from kvsim.memory_checks import max_batch_checks
from kvsim.workload import Workload

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def residents(pred) -> dict:
    return {r.name: float(np.max(r.gpu)) for r in pred.cost.resident}


def test_rope_tables_are_resident_and_sized_by_the_context():
    pred = predict("h100", method="dense", seq=131072, batch=1, model="llama-3.1-8b")
    assert residents(pred)["rope_tables"] == 2 * 131072 * 128 * 2  # cos and sin, bf16
    opt = predict("h100", method="dense", seq=2048, batch=1, model="opt-6.7b")
    assert residents(opt)["rope_tables"] == 0  # learned positions live in the weights


@pytest.mark.parametrize("method, copies", [("dense", 3.0), ("sparq", 5.0), ("quest", 9.0)])
def test_prefill_scratch_counts_one_layer_of_the_prompt(method, copies):
    pred = predict("h100", method=method, seq=32768, batch=4, model="llama-3.1-8b")
    layer = prompt_layer_bytes(load_model("llama-3.1-8b"), Workload(seq=32768, batch=4))
    assert layer == 4 * 8 * 32768 * 128 * 2
    assert float(pred.prefill_scratch_bytes) == pytest.approx(copies * layer)
    assert float(pred.peak_gpu_bytes) == pytest.approx(float(pred.memory_bytes) + copies * layer)


def test_streamingllm_holds_its_window_not_the_context():
    pred = predict("h100", method="streamingllm", seq=1_000_000, batch=1, model="llama-3.1-8b")
    window = 4 + 2000 + 1  # sink + recent + the new token
    assert residents(pred)["rope_tables"] == 2 * window * 128 * 2
    one_layer = prompt_layer_bytes(load_model("llama-3.1-8b"), Workload(seq=window, batch=1))
    assert float(pred.prefill_scratch_bytes) == pytest.approx(2 * one_layer)


@pytest.mark.parametrize("name", ["h100-memory.jsonl", "h200-memory.jsonl"])
def test_allocation_at_the_largest_batch_that_ran_within_one_percent(name):
    records = [json.loads(line) for line in (RESULTS / name).read_text().splitlines() if line.strip()]
    checks = max_batch_checks(records)
    assert len(checks) == 5
    for check in checks:
        assert abs(check["allocation_err"]) < 0.01, check
        assert abs(check["predicted"] - check["ran"]) <= 1, check
