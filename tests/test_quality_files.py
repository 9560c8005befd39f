"""Published quality in each method's folder (kvsim/methods/<m>/quality.yaml, kvsim.quality_data):
every file is read, every entry has its source and dense score, and DuoAttention's and ALISA's
parameters take part in the nearest-setting lookup."""
import pytest
import yaml

from kvsim import quality_data
from kvsim.errors import KvsimError
from kvsim.methods import REGISTRY, data_file, get_method
from kvsim.quality import DEFAULT_BENCHMARK, load_quality, plan_quality, quality

BENCHMARKS, ENTRIES = load_quality()
LOSSY = [m for m in REGISTRY if m != "dense"]


def _rows(name):
    return yaml.safe_load(data_file(name, "quality.yaml").read_text())["entries"]


@pytest.mark.parametrize("name", LOSSY)
def test_every_lossy_method_has_its_quality_file_and_every_row_is_loaded(name):
    rows = _rows(name)  # a file without entries says in its comments where was looked
    mine = [e for e in ENTRIES if e.method == name]
    assert len(mine) == len(rows)
    assert sorted(e.score for e in mine) == sorted(float(r["score"]) for r in rows)
    for e in mine:
        assert e.source and "arXiv" in e.source and e.dense > 0 and e.task and e.context > 0


def test_duoattention_table4_reads_back():
    duo = [e for e in ENTRIES if e.method == "duoattention"]
    assert [(e.score, e.dense, e.fraction, e.params["retrieval_ratio"]) for e in duo] == [(34.49, 37.52, 0.25, 0.25)]
    same_table = {e.method: e.score for e in ENTRIES if "Table 4" in e.source}
    assert same_table == {"duoattention": 34.49, "h2o": 26.84, "streamingllm": 27.80}


def test_duo_lookup_finds_table4_and_differs_only_by_model():
    q = quality(get_method("duoattention", {"retrieval_ratio": 0.25}), "llama-2-7b-32k", 31500, "longbench")
    assert q.nearest.method == "duoattention" and q.nearest.score == 34.49
    assert q.status == "unknown" and q.reasons == ("published on another model (Llama-2-7B-32K-Instruct, not llama-2-7b-32k)",)
    assert q.fraction == pytest.approx(0.25 + 0.75 * 321 / 31500)


def _own_file(tmp_path, method, params, budget_fraction, model="opt-6.7b"):
    """A quality file with one published setting of ``method`` on a kvsim preset (lookup only)."""
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({
        "benchmarks": {"ppl": {"description": "perplexity", "higher_is_better": False}},
        "tables": {"t": {"source": "a paper, Table 9", "model": model, "kvsim_model": model, "benchmark": "ppl",
                         "task": "perplexity", "context": 2048, "dense": 10.0}},
        "entries": [{"table": "t", "method": method, "budget_fraction": budget_fraction, "params": params,
                     "score": 12.5}]}))
    return path


def test_alisa_lookup_compares_kv_sparsity_and_kv_bits(tmp_path):
    path = _own_file(tmp_path, "alisa", {"sparsity": 0.8, "kv_bits": 8}, 0.2)
    q = quality(get_method("alisa", {"sparsity": 0.8, "kv_bits": 8}), "opt-6.7b", 2048, "ppl", path)
    assert q.status == "known" and q.relative == pytest.approx(10.0 / 12.5) and q.fraction == pytest.approx(0.2)
    bits = quality(get_method("alisa", {"sparsity": 0.8}), "opt-6.7b", 2048, "ppl", path)
    assert bits.status == "unknown" and bits.reasons == ("kv_bits=16 vs 8 published",)
    denser = quality(get_method("alisa", {"sparsity": 0.5, "kv_bits": 8}), "opt-6.7b", 2048, "ppl", path)
    assert denser.status == "unknown" and denser.distance["budget_ratio"] == pytest.approx(2.5)


def test_duo_lookup_compares_the_retrieval_ratio_with_its_windows(tmp_path):
    path = _own_file(tmp_path, "duoattention", {"retrieval_ratio": 0.5}, 0.5, "llama-3-8b")
    q = quality(get_method("duoattention"), "llama-3-8b", 2048, "ppl", path)  # GQA default: ratio 0.5
    assert q.status == "known" and q.fraction == pytest.approx(0.5 + 0.5 * 321 / 2048)
    fewer = quality(get_method("duoattention", {"retrieval_ratio": 0.1, "recent": 64}), "llama-3-8b", 2048, "ppl", path)
    assert fewer.status == "unknown" and any("keeps" in r for r in fewer.reasons)


@pytest.mark.parametrize("params, exact", [({"sparsity": 0.0}, True), ({"sparsity": 0.0, "kv_bits": 8}, False)])
def test_alisa_at_full_budget_is_exact_only_with_16_bit_kv(params, exact):
    assert (quality(get_method("alisa", params), "opt-6.7b", 2048).status == "exact") == exact


class _Opt:
    def __init__(self, method):
        self.method = method


@pytest.mark.parametrize("bench", sorted(BENCHMARKS))
@pytest.mark.parametrize("model, seq", [("llama-2-7b-32k", 31500), ("llama-2-13b", 1554), ("llama-3.1-70b", 131072)])
def test_a_floor_is_never_undercut_on_any_benchmark(bench, model, seq):
    options = [_Opt(m) for m in REGISTRY]
    for floor in (0.0, 0.7, 0.95):
        found, keep, _ = plan_quality(options, model, seq, {}, bench, floor)
        assert all(q.relative is not None and q.relative >= floor for q, k in zip(found, keep) if k)
        assert keep[list(REGISTRY).index("dense")]


def _broken_method_file(tmp_path, monkeypatch, text):
    (tmp_path / "quality.yaml").write_text(text)
    monkeypatch.setattr(quality_data, "data_file", lambda name, f: (tmp_path if name == "quest" else
                                                                    data_file(name, f).parent) / f)
    quality_data._load.cache_clear()


@pytest.mark.parametrize("text, message", [
    ("entries: [{table: quest-table1-10k, method: h2o, budget_tokens: 32, score: 1}]\n", "method h2o in quest's file"),
    ("entries: [{table: nope, budget_tokens: 32, score: 1}]\n", "unknown table"),
    ("entries: [{table: quest-table1-10k, score: 1}]\n", "entries.0"),
    ("entries: {}\n", "expected 'entries:' as a list")])
def test_a_broken_method_file_is_one_line_naming_it(tmp_path, monkeypatch, text, message):
    _broken_method_file(tmp_path, monkeypatch, text)
    try:
        with pytest.raises(KvsimError, match=message) as err:
            load_quality()
        assert str(tmp_path / "quality.yaml") in str(err.value) and "\n" not in str(err.value)
    finally:
        quality_data._load.cache_clear()


def test_default_benchmark_is_shipped():
    assert DEFAULT_BENCHMARK in BENCHMARKS and "longbench" in BENCHMARKS
