"""Interval construction (kvsim calibrate --intervals): a measured device gets its own residuals'
quantiles, a record is left out only where its device's calibration fitted it, and the class of
another architecture says it has no measurement behind it."""
import json
from pathlib import Path

import numpy as np
import pytest

from kvsim import intervals
from kvsim.calibrate import INTERVAL_SPLIT, _trained_on, interval_classes, is_held_out
from kvsim.intervals import fit_quantiles, quantiles
from kvsim.profiles import load_profile

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _records(name: str, every: int) -> list[dict]:
    rows = [json.loads(line) for line in (RESULTS / name).read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("source") == "measured" and not r.get("offload")][::every]


def test_a_record_is_trained_on_only_in_a_file_its_calibration_read():
    hw = load_profile("h200-sxm")
    record = next(r for r in _records("h200-sweep.jsonl", 1) if not is_held_out(r, hw.calibration.holdout))
    assert _trained_on(record, hw, "benchmarks/results/h200-sweep.jsonl")
    assert not _trained_on(record, hw, "elsewhere/h200-extended.jsonl")


def test_measured_devices_get_their_own_quantiles():
    files = {"benchmarks/results/h100-sweep.jsonl": _records("h100-sweep.jsonl", 2),
             "benchmarks/results/h200-sweep.jsonl": _records("h200-sweep.jsonl", 2)}
    classes = interval_classes(files)
    devices = classes["measured"]["devices"]
    assert set(devices) == {"h100-sxm", "h200-sxm"}
    assert classes["measured"]["n"] == sum(d["n"] for d in devices.values())
    assert all(d["q_low"] < 0 < d["q_high"] for d in devices.values())
    assert devices["h100-sxm"] != devices["h200-sxm"]
    other = classes["other-architecture"]
    assert other["n"] == 0 and "lower bound" in other["fit"] and other["from"] in classes
    used = [r for recs in files.values() for r in recs if not is_held_out(r, INTERVAL_SPLIT)]
    assert classes["same-architecture"]["n"] <= len(used)


def test_quantiles_prefer_the_devices_own(tmp_path, monkeypatch):
    table = {"measured": {**fit_quantiles(np.linspace(-0.05, 0.05, 50)),
                          "devices": {"h200-sxm": fit_quantiles(np.linspace(-0.1, 0.1, 50))}},
             "same-architecture": fit_quantiles(np.linspace(-0.2, 0.2, 50))}
    path = tmp_path / "step-latency.yaml"
    path.write_text(json.dumps(intervals.document(table, "test")))
    monkeypatch.setattr(intervals, "residuals_file", lambda: path)
    assert quantiles("measured", "h200-sxm")[2] == "measured (h200-sxm)"
    assert quantiles("measured", "h200-sxm")[1] == pytest.approx(0.09, abs=0.01)
    assert quantiles("measured", "a100-80gb")[1] == pytest.approx(0.045, abs=0.01)
    assert quantiles("other-architecture")[2] == "same-architecture"


def test_a_measured_machine_offset_widens_every_class_both_ways():
    from kvsim.calibrate import machine_offsets, with_machines
    assert np.array_equal(with_machines([0.01, 0.02], []), [0.01, 0.02])
    assert sorted(with_machines([0.0], [0.03])) == pytest.approx([-0.03, 0.03])
    original = _records("h100-sweep-scores.jsonl", 1)
    original = [r for r in original if r.get("latency_s")]
    faster = [{**r, "latency_s": r["latency_s"] * 0.95} for r in original]
    offsets = machine_offsets({"f=o": (faster, original)})
    assert offsets["f=o"] == pytest.approx(np.log(0.95))
    files = {"benchmarks/results/h100-sweep.jsonl": _records("h100-sweep.jsonl", 2)}
    plain, spread = interval_classes(files), interval_classes(files, offsets)
    for name in ("measured", "same-architecture"):
        if name in plain:
            assert spread[name]["q_low"] < plain[name]["q_low"] and spread[name]["q_high"] > plain[name]["q_high"]
            assert spread[name]["n"] == plain[name]["n"] and "f=o" in spread[name]["machines"]["offsets"]
    with pytest.raises(Exception, match="both machines"):
        machine_offsets({"x=y": (faster[:3], original)})


def test_machine_repeats_in_the_shipped_intervals_are_the_committed_files():
    """The shipped quantiles name the repeats they were widened by, and their offsets are what
    the committed files give."""
    from kvsim.calibrate import machine_offsets
    shipped = intervals._table(str(intervals.residuals_file()))["measured"]["machines"]["offsets"]
    for pair, offset in shipped.items():
        repeat, original = pair.split("=")
        read = lambda p: [json.loads(line) for line in (RESULTS.parents[1] / p).read_text().splitlines() if line.strip()]  # noqa: E731
        assert machine_offsets({pair: (read(repeat), read(original))})[pair] == pytest.approx(offset, abs=1e-4)
