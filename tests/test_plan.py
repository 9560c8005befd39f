"""Capacity planning: exact max batch, the objective, prices, ranking and the command."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kvsim.errors import KvsimError
from kvsim.profiles import load_profile
from kvsim.plan import MAX_BATCH, PRICES_FILE, evaluate, load_prices, max_batch, plan, settle
from kvsim.predict import predict
from kvsim.sweep import gpu_profiles

ROOT = Path(__file__).resolve().parent.parent
CASES = [("h100", "dense", "llama-3.1-8b", 1), ("rtx3090", "quest", "llama-2-7b", 1),
         ("a100-40gb", "sparq", "llama-3.1-8b", 2), ("h200", "alisa", "llama-3.1-70b", 4),
         ("l40s", "duoattention", "llama-3.1-8b", 1), ("v100", "h2o", "opt-13b", 2),
         ("rtx4090", "streamingllm", "mistral-7b-v0.2", 1), ("h100-pcie", "tidaldecode", "llama-3.1-70b", 8)]


def _fits(hw, method, seq, batch, model, gpus):
    return bool(predict(hw, method, seq=seq, batch=batch, model=model, gpus=gpus).fits)


@pytest.mark.parametrize("hw,method,model,gpus", CASES)
def test_max_batch_is_exact(hw, method, model, gpus):
    seqs = np.array([4096, 32768, 131072])
    limits = max_batch(hw, method, seqs, model=model, gpus=gpus)
    assert limits.shape == seqs.shape
    for seq, limit in zip(seqs, limits):
        if limit:
            assert _fits(hw, method, seq, int(limit), model, gpus)
        assert not _fits(hw, method, seq, int(limit) + 1, model, gpus)
    assert np.all(np.diff(limits) <= 0)  # longer contexts never fit more sequences


def test_settle_corrects_a_wrong_guess():
    """Where the closed form is off (memory not linear in batch), the bisection finds the answer."""
    hw, seq = load_profile("h100"), np.array([8192.0, 65536.0])
    exact = max_batch(hw, "dense", seq, model="llama-3.1-8b")

    def fits(batch):
        return predict(hw, "dense", seq=seq[:, None], batch=batch, model="llama-3.1-8b").fits

    for wrong in (exact + 7, np.maximum(exact - 5, 0), np.zeros(2), np.full(2, MAX_BATCH)):
        assert np.array_equal(settle(fits, wrong), exact)


def test_nothing_fits_is_batch_zero_with_the_reason():
    assert int(max_batch("rtx3090", "dense", 4096, model="llama-3.1-70b")) == 0
    option = evaluate("rtx3090", "dense", 4096, model="llama-3.1-70b")
    assert not option.fits and option.max_batch == 0 and option.tpot_s is None
    assert option.note.startswith("does not fit: needs") and "rtx-3090" in option.note


def test_option_at_max_batch_matches_predict_and_prices():
    price = load_prices()["h100-sxm"]
    option = evaluate("h100", "dense", 32768, model="llama-3.1-8b", price=price)
    assert option.batch == option.max_batch > 0 and option.meets_slo
    direct = predict("h100", "dense", seq=32768, batch=option.batch, model="llama-3.1-8b")
    assert option.tpot_s == pytest.approx(float(direct.latency_s))
    assert option.tokens_per_s == pytest.approx(option.batch / option.tpot_s)
    assert option.usd_per_mtok == pytest.approx(price.usd_per_gpu_hour / 3600 / option.tokens_per_s * 1e6)
    two = evaluate("h100", "dense", 32768, model="llama-3.1-8b", gpus=2, price=price)
    assert two.usd_per_hour == pytest.approx(2 * price.usd_per_gpu_hour)


def test_objective_picks_the_largest_batch_that_meets_it():
    free = evaluate("h100", "dense", 32768, model="llama-3.1-8b")
    goal = free.tpot_s * 0.8  # the largest batch misses this; smaller ones meet it
    option = evaluate("h100", "dense", 32768, model="llama-3.1-8b", tpot_s=goal)
    assert option.meets_slo and option.tpot_s <= goal and option.max_batch == free.max_batch
    slower = predict("h100", "dense", seq=32768, batch=option.batch + 1, model="llama-3.1-8b")
    assert float(slower.latency_s) > goal
    hopeless = evaluate("h100", "dense", 32768, model="llama-3.1-8b", tpot_s=1e-6)
    assert not hopeless.meets_slo and hopeless.fits and hopeless.batch == hopeless.max_batch


def test_given_batch_is_evaluated_even_when_it_does_not_fit():
    limit = int(max_batch("h100", "dense", 131072, model="llama-3.1-8b"))
    inside = evaluate("h100", "dense", 131072, model="llama-3.1-8b", batch=limit)
    beyond = evaluate("h100", "dense", 131072, model="llama-3.1-8b", batch=limit + 1)
    assert inside.fits and inside.batch == limit
    assert not beyond.fits and beyond.batch == limit + 1 and beyond.usd_per_mtok is None
    assert beyond.note.startswith("does not fit")


def test_ranking_and_cheapest():
    options = plan("llama-3.1-8b", 32768, ["h100", "l40s", "rtx3090"], ["dense", "quest"], [1, 2], tpot_ms=30)
    meeting = [o for o in options if o.meets_slo]
    assert meeting and options[:len(meeting)] == meeting  # those that meet the objective come first
    costs = [o.usd_per_mtok for o in meeting]
    assert costs == sorted(costs)
    assert [o.cheapest for o in options].count(True) == 1 and options[0].cheapest
    assert all(o.tpot_s <= 0.030 for o in meeting)
    assert all(not o.fits for o in options[[o.fits for o in options].count(True):])  # non-fitting last
    assert len(options) == 3 * 2 * 2


def test_without_objective_every_fitting_option_meets_it():
    options = plan("llama-3.1-8b", 8192, ["h100", "rtx4090"], ["dense"], [1, 2])
    assert all(o.meets_slo == o.fits for o in options)
    assert all(o.batch == o.max_batch for o in options if o.fits)


def test_every_gpu_profile_has_a_sourced_price():
    prices = load_prices()
    for profile in gpu_profiles():
        price = prices[profile.name]
        assert price.usd_per_gpu_hour > 0 and price.source.startswith("https://")
        assert len(price.checked) == 10 and price.checked[4] == "-"  # YYYY-MM-DD
        assert price.provider and price.product


def test_user_prices_replace_shipped_ones(tmp_path):
    mine = tmp_path / "prices.yaml"
    mine.write_text(yaml.safe_dump({"prices": {"h100-sxm": {
        "usd_per_gpu_hour": 1.0, "provider": "our contract", "source": "quote 42", "checked": "2026-11-01"}}}))
    prices = load_prices(mine)
    assert prices["h100-sxm"].usd_per_gpu_hour == 1.0
    assert prices["l40s"] == load_prices()["l40s"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("prices:\n  h100-sxm: {usd_per_gpu_hour: -1, provider: x, source: abc, checked: '2026-11-01'}\n")
    with pytest.raises(KvsimError, match="prices.h100-sxm.usd_per_gpu_hour"):
        load_prices(bad)
    assert PRICES_FILE.is_file()


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_plan_command_json_and_table(tmp_path):
    out = kvsim("plan", "--model", "llama-3.1-8b", "--seq", "32k", "--tpot-ms", "20", "--hw", "h100,rtx3090",
                "--method", "dense,sparq", "--gpus", "1,2", "--format", "json")
    assert out.returncode == 0, out.stderr
    options = json.loads(out.stdout)
    assert len(options) == 8
    for key in ("hw", "gpus", "method", "fits", "max_batch", "tpot_s", "tokens_per_s", "usd_per_mtok", "meets_slo"):
        assert all(key in o for o in options)
    assert sum(o["cheapest"] for o in options) == 1
    table = kvsim("plan", "--model", "llama-3.1-8b", "--seq", "32k", "--tpot-ms", "20", "--hw", "h100,rtx3090",
                  "--method", "dense,sparq", "--gpus", "1,2")
    assert table.returncode == 0, table.stderr
    assert "cheapest meeting the objective" in table.stdout and "$/M tokens" in table.stdout
    best = next(o for o in options if o["cheapest"])
    assert f"{best['usd_per_mtok']:.3f}" in table.stdout


@pytest.mark.parametrize("args,words", [
    (["--seq", "32k", "--tpot-ms", "-5"], "argument --tpot-ms: expected a positive number"),
    (["--seq", "32k", "--method", "nope"], "unknown method 'nope'"),
    (["--seq", "32k", "--hw", "nope"], "unknown hardware 'nope'"),
    (["--seq", "32k", "--prices", "/no/such.yaml"], "cannot read price file"),
    (["--seq", "32k", "--param", "nosuch=1"], "belongs to none of the methods"),
])
def test_plan_errors_are_one_line(args, words):
    out = kvsim("plan", "--hw", "h100", "--method", "dense", *args)  # a later --hw/--method wins
    assert out.returncode == 2
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_costs_timed_side_by_side_equal_each_timed_alone():
    """plan_time lays ops of several costs side by side: every latency is the same number."""
    from kvsim.methods import get_method
    from kvsim.models import load_model
    from kvsim.plan_time import time_together
    from kvsim.predict import step_cost
    from kvsim.roofline import step_time
    from kvsim.workload import Workload

    hw, model = load_profile("h100"), load_model("llama-3.1-70b")
    configs = [("dense", 1, 3), ("dense", 2, 40), ("quest", 8, 7), ("sparq", 4, 1), ("streamingllm", 2, 300),
               ("alisa", 8, 12), ("adore", 4, 5)]  # methods mixed: ops one cost lacks are zeros
    costs, alone = [], []
    for method, gpus, size in configs:
        wl = Workload(seq=32768.0, batch=np.arange(1.0, size + 3), dtype="bf16", kv_dtype="bf16")
        cost = step_cost(get_method(method), model, hw, wl, gpus)
        costs.append(cost)
        alone.append(np.broadcast_to(step_time(cost, hw).latency_s, wl.batch.shape)[:size])
    together = time_together(hw, costs, [size for *_, size in configs])
    for mine, reference in zip(together, alone):
        assert np.array_equal(mine, reference)


def test_cost_memo_shares_only_where_the_read_facts_agree():
    from kvsim.methods import get_method
    from kvsim.models import load_model
    from kvsim.plan_memo import CostMemo
    from kvsim.predict import step_cost
    from kvsim.workload import Workload

    model, method = load_model("llama-3.1-8b"), get_method("quest")
    wl = Workload(seq=32768.0, batch=np.arange(1.0, 9), dtype="bf16", kv_dtype="bf16")
    h100, l40s = load_profile("h100"), load_profile("l40s")
    roomy = h100.model_copy(update={"workspace_bytes": h100.workspace_bytes.model_copy(update={"value": 3e9})})
    memo, key = CostMemo(), ("quest", 1)
    first = memo.cost(method, model, h100, wl, 1, key)
    assert memo.cost(method, model, l40s, wl, 1, key) is first  # same workspace: the same cost
    other = memo.cost(method, model, roomy, wl, 1, key)
    assert other is not first
    for hw, cost in ((h100, first), (roomy, other)):
        direct = step_cost(method, model, hw, wl, 1)
        assert np.array_equal(cost.gpu_bytes, direct.gpu_bytes)
        assert np.array_equal(cost.total("hbm_read"), direct.total("hbm_read"))
    assert float(other.gpu_bytes[0] - first.gpu_bytes[0]) == 3e9 - h100.workspace_bytes.value
