"""Whole requests in plan: prefill + decode in $/Mtok, TTFT beside TPOT, the TTFT objective,
and the option table's array interface."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kvsim.plan import evaluate, load_prices, option_table, plan, rank
from kvsim.plan_search import REQUEST_EXACT_STEPS
from kvsim.predict import predict

ROOT = Path(__file__).resolve().parent.parent
MODEL, PROMPT = "llama-3.1-8b", 8192


def _by_hand(hw, method, batch, prompt, gen, gpus=1):
    """(TTFT, decode time): the prefill of ``batch`` prompts, then every decode step summed."""
    ttft = float(predict(hw, method, seq=prompt, batch=batch, gen=1, model=MODEL, gpus=gpus).generation.ttft_s)
    steps = predict(hw, method, seq=prompt + np.arange(1, gen + 1), batch=batch, model=MODEL, gpus=gpus)
    return ttft, float(np.sum(steps.latency_s))


@pytest.mark.parametrize("hw,method,gpus", [("h100", "dense", 1), ("l40s", "quest", 2)])
def test_request_price_is_prefill_plus_decode_by_hand(hw, method, gpus):
    gen = 32
    assert gen <= REQUEST_EXACT_STEPS  # every step evaluated: the sum is exact
    price = load_prices()[{"h100": "h100-sxm", "l40s": "l40s"}[hw]]
    option = evaluate(hw, method, PROMPT, model=MODEL, gpus=gpus, price=price, gen=gen)
    assert option.fits and option.batch == option.max_batch > 1
    ttft, decode = _by_hand(hw, method, option.batch, PROMPT, gen, gpus)
    assert option.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert option.tpot_s == pytest.approx(decode / gen, rel=1e-12)
    assert option.request_s == pytest.approx(ttft + decode, rel=1e-12)
    usd_per_second = price.usd_per_gpu_hour * gpus / 3600
    prefill_part = usd_per_second * ttft / (option.batch * gen) * 1e6
    decode_part = usd_per_second * decode / (option.batch * gen) * 1e6
    assert option.usd_per_mtok == pytest.approx(prefill_part + decode_part, rel=1e-12)
    assert option.usd_per_mtok_all == pytest.approx(option.usd_per_mtok * gen / (PROMPT + gen), rel=1e-12)
    steady = evaluate(hw, method, PROMPT, model=MODEL, gpus=gpus, price=price, batch=option.batch)
    assert option.usd_per_mtok > steady.usd_per_mtok  # prefill is paid for


def test_long_request_integrates_the_decode_steps_closely():
    gen = 1000
    option = evaluate("h100", "dense", PROMPT, model=MODEL, gen=gen, batch=4)
    ttft, decode = _by_hand("h100", "dense", 4, PROMPT, gen)
    assert option.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert option.tpot_s * gen == pytest.approx(decode, rel=1e-4)


def test_request_memory_is_checked_at_the_last_context():
    option = evaluate("h100", "dense", PROMPT, model=MODEL, gen=4096)
    # the cache of the last context, and the prompt's prefill scratch beside it
    request = lambda batch: predict("h100", seq=PROMPT, gen=4096, batch=batch, model=MODEL)  # noqa: E731
    assert request(option.max_batch).fits
    assert not request(option.max_batch + 1).fits


def test_ttft_objective_excludes_options_that_miss_it():
    hws, methods, gen = ["h100", "l40s", "rtx3090"], ["dense", "streamingllm"], 16
    free = plan(MODEL, 32768, hws, methods, [1, 2], gen=gen)
    first = {(o.hw, o.gpus, o.method): evaluate(o.hw, o.method, 32768, model=MODEL, gpus=o.gpus, gen=gen, batch=1)
             for o in free if o.fits}
    goal_s = float(np.median([o.ttft_s for o in first.values()]))  # some options miss it even at batch 1
    options = plan(MODEL, 32768, hws, methods, [1, 2], gen=gen, ttft_ms=goal_s * 1e3)
    assert any(o.meets_slo for o in options) and any(o.fits and not o.meets_slo for o in options)
    for o in options:
        if o.meets_slo:
            assert o.ttft_s <= goal_s
            if o.batch < o.max_batch:  # the next batch misses the objective
                bigger = evaluate(o.hw, o.method, 32768, model=MODEL, gpus=o.gpus, gen=gen, batch=o.batch + 1)
                assert bigger.ttft_s > goal_s
        elif o.fits:
            assert first[(o.hw, o.gpus, o.method)].ttft_s > goal_s
    priced = [o for o in options if o.meets_slo and o.usd_per_mtok]
    assert options[0].cheapest and options[0] is priced[0]


def test_table_columns_keep_mask_and_shapes():
    table = option_table(MODEL, 32768, ["h100", "l40s"], ["dense", "quest", "streamingllm"], [1, 2], tpot_ms=20)
    assert len(table) == 12 and all(len(column) == 12 for column in table.columns.values())
    assert "ttft_s" not in table.columns  # steady state: no request columns
    keep = table["method"] != "streamingllm"
    ranked = rank(table.with_columns(keep=keep), keep=keep)
    assert not np.any(ranked["meets_slo"] & (ranked["method"] == "streamingllm"))
    assert ranked["method"][0] != "streamingllm" and ranked["cheapest"][0]
    def keys(t):
        return sorted(zip(t["hw"], t["gpus"], t["method"]))
    assert keys(ranked) == keys(table)  # the same rows, reordered
    with pytest.raises(ValueError, match="rows"):
        table.with_columns(score=np.zeros(3))


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_plan_command_requests():
    args = ["plan", "--model", MODEL, "--prompt", "8k", "--gen", "32", "--hw", "h100", "--method", "dense",
            "--gpus", "1", "--tpot-ms", "30", "--ttft-ms", "5000"]
    out = kvsim(*args, "--format", "json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert {"ttft_s", "request_s", "usd_per_mtok_all"} <= set(row) and row["ttft_s"] <= 5.0
    text = kvsim(*args)
    assert text.returncode == 0 and "TTFT" in text.stdout and "prefill and decode counted" in text.stdout


@pytest.mark.parametrize("args,words", [
    (["--seq", "8k", "--ttft-ms", "100"], "--ttft-ms needs whole requests"),
    (["--prompt", "8k"], "--prompt and --gen go together"),
    (["--seq", "8k", "--prompt", "8k", "--gen", "4"], "give --seq"),
    (["--prompt", "8k", "--gen", "4", "--ttft-ms", "0"], "argument --ttft-ms: expected a positive number"),
])
def test_request_errors_are_one_line(args, words):
    out = kvsim("plan", "--hw", "h100", "--method", "dense", *args)
    assert out.returncode == 2
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1
