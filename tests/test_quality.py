"""Published quality (kvsim/methods/*/quality.yaml with the tables of kvsim/data/quality.yaml; kvsim.quality) and its use in predict and plan."""
import json

import numpy as np
import pytest

from kvsim.cli import main
from kvsim.errors import KvsimError
from kvsim.methods import METHODS, get_method
from kvsim.quality import (BUDGET_FACTOR, DEFAULT_BENCHMARK, kept_fraction, load_quality, plan_quality,
                           quality)

BENCHMARKS, ENTRIES = load_quality()


def test_every_entry_has_a_source_a_dense_reference_and_a_setting():
    assert len(ENTRIES) >= 60
    for e in ENTRIES:
        assert e.method in METHODS and e.benchmark in BENCHMARKS
        assert len(e.source) > 20 and "arXiv" in e.source
        assert e.dense > 0 and np.isfinite(e.relative) and e.relative >= 0
        assert 0 < e.fraction <= 1 and e.context > 0
        assert e.score <= e.dense * 1.5  # same units as dense (percent with percent)


def test_at_least_three_settings_for_each_method_with_published_numbers():
    counts = {m: sum(e.method == m for e in ENTRIES) for m in METHODS}
    for method in ("sparq", "quest", "tidaldecode", "h2o", "streamingllm"):
        assert counts[method] >= 3, method


def test_shipped_numbers_read_back():
    quest = [e for e in ENTRIES if e.method == "quest" and e.model == "Yarn-Llama-2-7b-128k"]
    assert {(round(e.fraction * e.context), e.score) for e in quest} == {
        (256, 88), (512, 92), (1024, 96), (2048, 100), (4096, 100)}


@pytest.mark.parametrize("method, params, seq", [
    ("dense", {}, 4096), ("sparq", {"k": 4096}, 4096), ("quest", {"budget": 8192}, 8192),
    ("tidaldecode", {"k": 4095}, 4096), ("h2o", {"heavy": 2000, "recent": 2095}, 4096),
    ("streamingllm", {"sink": 4, "recent": 4091}, 4096), ("duoattention", {"retrieval_ratio": 1.0}, 65536),
    ("duoattention", {"sink": 64, "recent": 4031}, 4096), ("alisa", {"sparsity": 0.0}, 4096),
    ("adore", {"m": 4095}, 4096)])
def test_full_budget_is_exact(method, params, seq):
    q = quality(get_method(method, params), "llama-3.1-8b", seq)
    assert q.status == "exact" and q.relative == 1.0 and q.fraction == pytest.approx(1.0)


def test_one_token_short_of_the_context_is_not_exact():
    for method, params in [("quest", {"budget": 4095}), ("streamingllm", {"sink": 4, "recent": 4090}),
                           ("alisa", {"sparsity": 0.01})]:
        assert quality(get_method(method, params), "llama-3.1-8b", 4096).status != "exact"


def test_kept_fraction_is_vectorized_over_context():
    seq = np.array([1024.0, 4096.0, 1 << 20])
    share, exact = kept_fraction(get_method("streamingllm"), "llama-3.1-8b", seq)
    assert share.shape == seq.shape and exact.tolist() == [True, False, False]
    assert share[2] == pytest.approx(2005 / (1 << 20))


def test_same_model_same_budget_is_known():
    q = quality(get_method("sparq", {"r": 32, "k": 4096}), "llama-2-7b-32k", 32768)
    assert q.status == "known" and q.relative == pytest.approx(0.928309 / 0.976103)
    assert "rmoe-91-needle" in q.source and not q.reasons


def test_another_model_is_unknown_with_the_reason():
    q = quality(get_method("sparq", {"r": 32, "k": 4096}), "llama-3.1-8b", 32768)
    assert q.status == "unknown" and q.relative is None and q.nearest.kvsim_model == "llama-2-7b-32k"
    assert any("another model" in r for r in q.reasons)


def test_budget_and_context_beyond_the_stated_factors_are_unknown():
    far = quality(get_method("sparq", {"r": 4, "k": 256}), "llama-2-7b-32k", 32768)
    assert far.status == "unknown" and far.distance["budget_ratio"] < 1 / BUDGET_FACTOR
    long = quality(get_method("sparq", {"r": 32, "k": 32768}), "llama-2-7b-32k", 262144)
    assert long.status == "unknown" and any("context" in r for r in long.reasons)


def test_a_method_without_published_numbers_says_so():
    q = quality("adore", "llama-3.1-8b", 131072)
    assert q.status == "unknown" and q.nearest is None and "no published result" in q.reasons[0]


def test_other_settings_must_match():
    q = quality(get_method("tidaldecode", {"reselect_layer": 7}), "llama-3.1-8b", 100000)
    assert any("reselect_layer=7" in r for r in q.reasons)


class _Opt:
    def __init__(self, method):
        self.method = method


@pytest.mark.parametrize("floor", [0.0, 0.05, 0.5, 0.9, 1.0])
def test_plan_floor_keeps_only_known_or_exact_quality_at_or_above_it(floor):
    options = [_Opt(m) for m in METHODS for _ in range(2)]
    found, keep, why = plan_quality(options, "llama-2-7b-32k", 32768, {}, DEFAULT_BENCHMARK, floor)
    for q, k, w in zip(found, keep, why):
        assert k == (q.relative is not None and q.relative >= floor)
        assert bool(w) == (not k)
    assert keep[[o.method == "dense" for o in options]].all()


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_cli_floor_never_returns_an_option_below_it(capsys):
    code, out, _ = _run(capsys, "plan", "--model", "llama-2-7b-32k", "--seq", "32k", "--hw", "h100",
                        "--gpus", "1", "--quality-floor", "0.5", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    kept = [r for r in rows if r["excluded"] is None]
    assert kept and all(r["quality"]["relative"] >= 0.5 for r in kept)
    assert {r["method"] for r in kept} >= {"dense", "sparq"}
    assert all(not r["cheapest"] for r in rows if r["excluded"])
    assert sum(r["cheapest"] for r in rows) <= 1


def test_plan_without_floor_shows_every_option_and_marks_unknown(capsys):
    code, out, _ = _run(capsys, "plan", "--model", "llama-2-7b-32k", "--seq", "32k", "--hw", "h100",
                        "--gpus", "1")
    assert code == 0 and "unknown*" in out and "exact" in out and "quality floor" not in out


@pytest.mark.parametrize("value", ["nan", "-0.1", "1.5", "inf", "x"])
def test_bad_quality_floor_is_one_line_and_exit_2(capsys, value):
    code, out, err = _run(capsys, "plan", "--model", "llama-2-7b-32k", "--seq", "32k",
                          "--quality-floor", value)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "quality-floor" in err


def test_unknown_benchmark_is_one_line_and_exit_2(capsys):
    code, _, err = _run(capsys, "predict", "--hw", "h100", "--seq", "4k", "--quality-benchmark", "nope")
    assert code == 2 and "unknown quality benchmark" in err


def test_predict_prints_a_quality_line_and_json_carries_it(capsys):
    code, out, _ = _run(capsys, "predict", "--hw", "h100", "--method", "sparq", "--model", "llama-2-7b-32k",
                        "--seq", "32k", "--param", "r=32", "--param", "k=4k")
    assert code == 0 and "quality            0.95 of dense on retrieval" in out
    code, out, _ = _run(capsys, "predict", "--hw", "h100", "--method", "quest", "--seq", "128k", "--format", "json")
    record = json.loads(out)
    assert record["quality"]["status"] == "unknown" and record["quality"]["nearest"]["method"] == "quest"
    code, out, _ = _run(capsys, "predict", "--hw", "h100", "--method", "all", "--seq", "8k")
    assert "quality (retrieval)" in out


def test_lower_is_better_benchmarks_divide_dense_by_the_score():
    assert not BENCHMARKS["wikitext_bpc"].higher_is_better
    bpc = next(e for e in ENTRIES if e.benchmark == "wikitext_bpc" and e.method == "sparq")
    assert bpc.score > bpc.dense and bpc.relative == pytest.approx(bpc.dense / bpc.score) and bpc.relative < 1
    q = quality(get_method("sparq", {"r": 8, "k": 128}), "llama-2-13b", 1554, "wikitext_bpc")
    assert q.status == "known" and q.relative == pytest.approx(0.609574 / 0.697156)


def test_a_broken_quality_file_names_the_field(tmp_path):
    bad = tmp_path / "q.yaml"
    bad.write_text("benchmarks: {r: {description: abc, higher_is_better: true}}\n"
                   "tables: {t: {source: 0123456789x, model: m1, benchmark: r, task: abc, context: 10, dense: 1}}\n"
                   "entries: [{table: t, method: quest, score: 1}]\n")
    with pytest.raises(KvsimError, match="entries.0"):
        load_quality(bad)


def test_plan_rejects_an_unknown_benchmark_before_planning(capsys):
    code, out, err = _run(capsys, "plan", "--model", "llama-2-7b-32k", "--seq", "32k", "--quality-benchmark", "x")
    assert code == 2 and out == "" and "unknown quality benchmark 'x'" in err


def test_a_quality_file_without_its_sections_is_one_error(tmp_path):
    bad = tmp_path / "q.yaml"
    bad.write_text("benchmarks: []\n")
    with pytest.raises(KvsimError, match="benchmarks"):
        load_quality(bad)
