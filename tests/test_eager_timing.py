"""How the harness times an eager call (kvsim.eager_timing): after the L2 flush and under the
backlog the previous timed call left on the GPU, with the host-clock probe between calls."""
import numpy as np
import pytest

from kvsim.eager_timing import PROBE_CALLS, _Call, as_timed, flush_time, probe_time
from kvsim.records import read_jsonl
from kvsim.roofline import graph_replay_time, step_time
from kvsim.runtime import launches
from kvsim.validate import predict_record


def test_the_harness_head_start_lies_between_the_gpu_time_and_the_idle_start():
    """kvsim.eager_timing: a timed call starts with the GPU still flushing L2 (and finishing the
    previous call), so it measures at most the eager time from an idle GPU, at least the GPU
    time, and less with a longer flush."""
    for record in [r for r in read_jsonl("benchmarks/results/h100-sweep.jsonl") if r["method"] in ("dense", "sparq")][:6]:
        eager = predict_record(record, engine="eager")
        graphs = predict_record(record)
        step, attention = as_timed(eager, record)
        kernels = graphs.latency_s - graph_replay_time(graphs.hw)  # the GPU time, less a replay's fixed cost
        assert np.all(step <= eager.latency_s + 1e-12) and np.all(step >= kernels - 1e-12)
        assert np.all(attention <= eager.attention()["latency_s"] + 1e-12)
        longer = as_timed(eager, dict(record, l2_flush_bytes=10 * record["l2_flush_bytes"]))[0]
        assert np.all(longer <= step) and flush_time(record, eager.hw) > 0
        assert np.all(as_timed(eager, dict(record, l2_flush_bytes=0))[0] >= step)


def test_the_call_before_leaves_a_backlog_that_the_next_call_starts_under():
    """kvsim.eager_timing: the harness never syncs between its timed calls, so a GPU-bound
    attention-only call leaves work queued that the step's host issue runs under (a head start
    beyond the flush), and the host-clock probe before each attention-only call absorbs the
    step's backlog; the probe's host time is PROBE_CALLS probes, as the runtime takes it."""
    assert PROBE_CALLS == launches.PROBE_CALLS
    record = next(r for r in read_jsonl("benchmarks/results/h100-sweep.jsonl")
                  if r["method"] == "dense" and r["batch"] == 8 and r["seq"] == 16384 and r["model"] == "llama-3.1-8b")
    pred = predict_record(record, engine="eager")
    attn_cost = pred.cost.attention()
    attn = _Call(step_time(attn_cost, pred.hw, "eager", pred.model.n_layers), attn_cost)
    assert np.all(attn.backlog(0.0) > 0)  # GPU-bound: work left queued when the host is done
    step, _ = as_timed(pred, record)
    no_backlog = np.maximum(_Call(pred.timing, pred.cost).gpu, pred.timing.latency_s - 0.0)
    assert np.all(step <= no_backlog + 1e-12)
    probed = dict(record, eager=dict(record["eager"], host_probe_s=1e-3))
    assert probe_time(probed) == pytest.approx(PROBE_CALLS * 1e-3) and probe_time(record) == 0.0
    assert np.all(as_timed(pred, probed)[1] >= as_timed(pred, record)[1] - 1e-12)  # less head start


@pytest.mark.parametrize("probe", ["x", float("nan"), -1e-6, 2.0])
def test_a_malformed_host_probe_is_one_line(probe, tmp_path, capsys):
    """eager.host_probe_s scales every host cost: anything but seconds per call is refused."""
    import json
    from pathlib import Path

    from kvsim.cli import main
    root = Path(__file__).resolve().parent.parent
    record = read_jsonl(str(root / "benchmarks" / "results" / "h100-eager-vault2.jsonl"))[0]
    record["eager"]["host_probe_s"] = probe
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert main(["validate", str(path), "--engine", "eager"]) == 2
    err = capsys.readouterr().err
    assert "host_probe_s" in err and err.count("\n") == 1
