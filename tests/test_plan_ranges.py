"""kvsim plan's 90% ranges: TPOT, $/M tokens and the batch meeting the objective, from the
residuals of each profile's trust class (kvsim.intervals)."""
import json

import numpy as np
import pytest

from kvsim.cli import main
from kvsim.profiles import load_profile
from kvsim.intervals import interval, quantiles
from kvsim.plan import option_table

HWS = ["h100", "h200", "l40s", "a100-80gb-sxm"]


@pytest.fixture(scope="module")
def table():
    return option_table("llama-3.1-8b", 32768, HWS, ["dense", "quest", "streamingllm"], [1, 2], tpot_ms=20)


def test_every_value_lies_inside_its_range(table):
    fits = table["fits"]
    assert fits.sum() >= 6
    for name in ("tpot_s", "usd_per_mtok"):
        value, low, high = (table[name + s][fits] for s in ("", "_low", "_high"))
        priced = ~np.isnan(value)
        assert np.all(low[priced] < value[priced]) and np.all(value[priced] < high[priced]), name
    assert np.all(table["batch_low"][fits] <= table["batch"][fits])
    assert np.all(table["batch"][fits] <= table["batch_high"][fits])
    assert np.all(table["batch_high"][fits] <= table["max_batch"][fits])


def test_a_batch_limited_by_the_objective_has_a_range(table):
    limited = table["fits"] & (table["batch"] < table["max_batch"])
    assert limited.any()
    assert np.all(table["batch_low"][limited] < table["batch_high"][limited])


def test_the_interval_follows_the_profiles_trust(table):
    for row in table.rows():
        trust = load_profile(row["hw"]).trust_class
        assert row["interval_class"] == quantiles(trust, row["hw"])[2]
        if row["fits"]:
            low, high = interval(row["tpot_s"], trust, row["hw"])
            assert row["tpot_s_low"] == pytest.approx(float(low))
            assert row["tpot_s_high"] == pytest.approx(float(high))
    measured = table["hw"] == "h100-sxm"
    assert set(table["interval_class"][measured]) == {"measured (h100-sxm)"}
    assert not any(c.startswith("measured") for c in table["interval_class"][table["hw"] == "l40s"])


def test_plan_prints_and_writes_the_ranges(capsys):
    args = ["plan", "--model", "llama-3.1-8b", "--seq", "32k", "--tpot-ms", "20", "--hw", "h100",
            "--method", "dense", "--gpus", "1"]
    main(args)
    text = capsys.readouterr().out
    assert " ms (" in text and "–" in text and "ranges: 90% intervals" in text
    main(args + ["--format", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    assert row["tpot_s_low"] < row["tpot_s"] < row["tpot_s_high"]
    assert row["usd_per_mtok_low"] < row["usd_per_mtok"] < row["usd_per_mtok_high"]
    assert row["batch_low"] <= row["batch"] <= row["batch_high"]
