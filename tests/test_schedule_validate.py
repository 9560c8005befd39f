"""kvsim validate on executed-schedule records (synthetic ones: the prediction scaled), and
kvsim schedule's emulated GPU (--gpu-mem, --layers). No torch."""
import json

import numpy as np
import pytest

from kvsim.cli import main
from kvsim.schedule.executed import prediction, with_gpu_memory
from kvsim.schedule.validate import compare, text

# 1024 tokens: long enough that the plan recomputes (Phase III). At 512 it did on the 2026-11-26
# H100 profile; on the 2026-12-07 one (measured attention curves, recalibrated) it offloads to the end
CONFIG = dict(hw="h100", model="opt-6.7b", layers=4, batch=32, prompt=128, gen=1024)
GIB = 2**30
# a budget whose plan offloads and recomputes (5.0 GiB did until the gathered rows' two-layer
# copies were counted: 2026-12-07)
BUDGET = 5.2 * GIB


@pytest.fixture(scope="module")
def pred():
    return prediction(**CONFIG, gpu_mem=BUDGET)


def _record(pred, policy, time_scale=1.0, memory_scale=1.0):
    """A record as measure_schedule.py writes it, whose measurements are the prediction scaled."""
    side = pred[policy]
    steps = [{"step": j, "latency_s": t * time_scale, "peak_bytes": 1, "h2d": 0, "d2h": 0}
             for j, t in enumerate(side["step_s"])]
    peak = (max(side["gpu_bytes"][1:]) - pred["workspace_bytes"]) * memory_scale
    prefill = (side["gpu_bytes"][0] - pred["workspace_bytes"]) * memory_scale
    return {"prefill_peak_bytes": prefill, "source": "measured", "kind": "schedule", "policy": policy, "hw": pred["hw"], "model": CONFIG["model"],
            "n_layers": CONFIG["layers"], "method": "alisa" if policy == "alisa" else "dense", "params": {},
            "schedule_params": pred["params"], "batch": CONFIG["batch"], "seq": CONFIG["prompt"],
            "prompt": CONFIG["prompt"], "gen": CONFIG["gen"], "gpu_mem_bytes": BUDGET, "steps": steps,
            "peak_memory_bytes": peak, "pcie_bytes": float(np.sum(side["pcie"])),
            "prefill_sequences": side["prefill_sequences"]}


def test_budget_plan_has_phases_and_a_flexgen_baseline(pred):
    a = pred["alisa"]
    assert a["p1"] <= CONFIG["gen"] and a["beta"] > 0 and a["weights_gpu"] == 1.0  # Phases II and III
    assert pred["gpu_capacity_bytes"] == BUDGET
    assert 0 <= pred["flexgen"]["kv_gpu"] < 1 and len(pred["flexgen"]["step_s"]) == CONFIG["gen"] + 1


def test_token_plan_pools_are_the_most_rows_held(pred):
    t = pred["alisa"]["tokens"]
    n, d = np.array(t["n"]), np.array(t["deleted"])
    assert t["gpu_rows"] + t["host_rows"] >= n[-1] - d[-1] and t["gpu_rows"] < n[-1]
    assert d[-1] == t["last"] > 0 and np.all(np.diff(d) >= 0)


def test_errors_and_speedup_from_scaled_records(pred):
    found = compare([_record(pred, "alisa", 1.1, 0.95), _record(pred, "flexgen", 0.8)])
    alisa, flexgen = found["rows"]
    assert alisa["total"]["err"] == pytest.approx(1 / 1.1 - 1)
    assert alisa["peak_gpu"]["err"] == pytest.approx(1 / 0.95 - 1)
    assert flexgen["total"]["err"] == pytest.approx(1 / 0.8 - 1) and flexgen["pcie"]["err"] == pytest.approx(0)
    assert set(alisa["phase_median"]) == {"II", "III"} and set(flexgen["phase_median"]) == {"static"}
    for phase in alisa["phase_median"].values():
        assert phase["err"] == pytest.approx(1 / 1.1 - 1)
    (speedup,) = found["speedups"]
    assert speedup["predicted"] == pytest.approx(pred["flexgen"]["total_s"] / pred["alisa"]["total_s"])
    assert speedup["measured"] == pytest.approx(speedup["predicted"] * 0.8 / 1.1)
    assert "ALISA/FlexGen speedup" in text(found)


def test_two_runs_of_one_configuration_give_a_speedup_each(pred):
    """Two machines' runs of the same plans (two files): each run's ALISA with its own FlexGen."""
    runs = [_record(pred, "alisa", 1.0), _record(pred, "flexgen", 1.2), _record(pred, "alisa", 1.0),
            _record(pred, "flexgen", 1.5)]
    first, second = compare(runs)["speedups"]
    assert second["measured"] / first["measured"] == pytest.approx(1.5 / 1.2)


def test_the_prefill_peak_is_compared_and_a_prefill_over_the_budget_is_said(pred):
    found = compare([_record(pred, "alisa", memory_scale=0.9), _record(pred, "flexgen")])
    alisa, flexgen = found["rows"]
    assert alisa["prefill_gpu"]["err"] == pytest.approx(1 / 0.9 - 1) and flexgen["prefill_gpu"]["err"] == pytest.approx(0)
    for row, side in ((alisa, pred["alisa"]), (flexgen, pred["flexgen"])):
        assert row["prefill_over_budget"] == pytest.approx(side["gpu_bytes"][0] - BUDGET)
    over = [r["policy"] for r in found["rows"] if r["prefill_over_budget"] > 0]
    assert "prefill GPU memory (GiB)" in text(found)
    assert ("over the emulated budget" in text(found)) == bool(over)


def test_flexgen_executed_holds_its_gpu_share_of_the_cache_from_the_start():
    """The executor allocates the GPU share of the whole run's K/V at the start (runtime/offload.py),
    so at the prefill kvsim holds it too, beside the weights and the workspace."""
    from kvsim.methods import get_method
    from kvsim.models import first_layers
    from kvsim.schedule.inputs import step_inputs
    a = dict(CONFIG, gen=512)  # a budget whose FlexGen plan keeps every weight on the GPU (gpu_sched.sh's A)
    side = prediction(**a, gpu_mem=5.5 * GIB)["flexgen"]
    hw = with_gpu_memory("h100", 5.5 * GIB)
    dense = step_inputs(get_method("dense"), first_layers(a["model"], a["layers"]), hw, a["batch"], a["prompt"],
                        a["gen"], hw.preferred_dtype, hw.preferred_dtype)
    assert side["weights_gpu"] == 1.0 and 0 < side["kv_gpu"] < 1
    whole_share = side["kv_gpu"] * dense.rho * (a["prompt"] + a["gen"])
    assert side["gpu_bytes"][0] >= dense.weights + whole_share + hw.workspace_bytes.value


def test_validate_cli_prints_the_schedule_table(pred, tmp_path, capsys):
    path = tmp_path / "h100-schedule.jsonl"
    path.write_text("".join(json.dumps(_record(pred, p)) + "\n" for p in ("alisa", "flexgen")))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "median step, III (ms)" in out and "+0.0%" in out and "kvsim" in out
    assert main(["validate", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"]["speedups"]


def test_validate_rejects_a_record_of_another_length(pred, tmp_path, capsys):
    bad = _record(pred, "alisa")
    bad["steps"] = bad["steps"][:-1]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    assert main(["validate", str(path)]) == 2
    assert "steps" in capsys.readouterr().err


def test_schedule_cli_gpu_mem(capsys):
    assert main(["schedule", "--hw", "h100", "--model", "opt-6.7b", "--layers", "4", "--batch", "32",
                 "--prompt", "128", "--gen", "64", "--gpu-mem", "5GiB", "--format", "json", "--no-baselines"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu_capacity_bytes"] == 5 * GIB and out["peak_gpu_bytes"] <= 5 * GIB
    assert main(["schedule", "--hw", "h100", "--model", "opt-6.7b", "--gpu-mem", "1TB"]) == 2
    assert "--gpu-mem must be in" in capsys.readouterr().err
    assert main(["schedule", "--hw", "h100", "--model", "opt-6.7b", "--gpu-mem", "lots"]) == 2
    assert "cannot read 'lots' as a byte size" in capsys.readouterr().err


def test_with_gpu_memory_keeps_the_rest_of_the_profile():
    hw = with_gpu_memory("h100", 4 * GIB)
    assert hw.memory.capacity_bytes.value == 4 * GIB and "emulated" in hw.memory.capacity_bytes.source
    assert hw.memory.bandwidth_Bps == with_gpu_memory("h100", None).memory.bandwidth_Bps


def test_kvsim_times_the_plan_that_ran_at_the_host_clock_it_ran(pred):
    """A record carries its placement and host-clock probe: kvsim times that placement (not the
    one today's planner would choose) with every host cost scaled by the probe."""
    from kvsim.profiles import load_profile
    record = _record(pred, "alisa")
    record["plan"] = {k: pred["alisa"][k] for k in ("p1", "p2", "alpha", "beta", "weights_gpu")}
    probe = load_profile(CONFIG["hw"]).host.probe_s.value
    same = compare([record | {"host_probe_s": probe}])["rows"][0]
    assert same["total"]["err"] == pytest.approx(0.0, abs=1e-9)
    slow = compare([record | {"host_probe_s": 2 * probe}])["rows"][0]
    assert slow["total"]["predicted"] > 1.2 * same["total"]["predicted"]  # eager steps are host-bound here
    other = dict(record["plan"], p1=0, alpha=1.0)  # everything past the window offloaded from the start
    moved = compare([record | {"plan": other}])["rows"][0]
    assert moved["pcie"]["predicted"] > same["pcie"]["predicted"]


@pytest.mark.parametrize("field, value", [("p1", "x"), ("p2", 10**9), ("alpha", float("nan")), ("beta", -0.5),
                                          ("host_probe_s", -1.0), ("host_probe_s", "fast")])
def test_validate_rejects_a_malformed_plan_or_probe_in_one_line(pred, tmp_path, capsys, field, value):
    bad = _record(pred, "alisa")
    bad["plan"] = {k: pred["alisa"][k] for k in ("p1", "p2", "alpha", "beta", "weights_gpu")}
    if field == "host_probe_s":
        bad[field] = value
    else:
        bad["plan"][field] = value
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("\n") == 1 and "Traceback" not in err
