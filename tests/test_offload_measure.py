"""benchmarks/measure_offload_synced.py and the synced timing of runtime/measure.py on the CPU
(the code paths of the GPU script benchmarks/gpu_offload.sh; graph capture needs CUDA)."""
import json

import pytest

from kvsim.models import ModelConfig

TINY = ModelConfig(name="tiny-llama", family="llama", n_layers=4, d_model=256, n_heads=8, n_kv_heads=2,
                   head_dim=32, ffn_dim=512, vocab=1000, max_context=4096, mlp="swiglu", norm="rmsnorm",
                   source="test")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_offload_script_records_synced_times_cut_params_and_resumes(tmp_path, monkeypatch):
    import kvsim.runtime.measure as harness
    from benchmarks import measure_offload_synced as script
    real = harness.measure
    monkeypatch.setattr(harness, "measure", lambda **kw: real(**{**kw, "model": TINY}))
    out, synced = tmp_path / "off.jsonl", tmp_path / "synced.jsonl"
    argv = ["--out", str(out), "--synced-out", str(synced), "--methods", "dense,tidaldecode", "--offload", "0.5",
            "--seqs", "80", "--batch", "1", "--layers", "4", "--steps", "2", "--warmup", "1", "--device", "cpu"]
    assert script.main(argv) == 0
    records, views = _lines(out), _lines(synced)
    assert [r["method"] for r in records] == ["dense", "tidaldecode"] and len(views) == 2
    tidal = records[1]
    assert tidal["params"]["reselect_layer"] == tidal["resolved_params"]["reselect_layer"] == 3
    for rec, view in zip(records, views):
        assert rec["fits"] and rec["offload"] == 0.5 and rec["pcie"]["h2d"] > 0
        assert "eager (no CUDA)" in rec["timer"]  # no graph on the CPU: said, not crashed
        first = rec["synced"]["contexts"][0]
        assert rec["synced"]["contexts"] == [first, first + 1] and first > rec["contexts"][1]
        assert view["latency_s"] == rec["synced"]["latency_s"] == view["eager"]["latency_s"]
        assert view["attention"]["latency_s"] == rec["synced"]["attention_latency_s"]
        assert view["contexts"] == rec["synced"]["contexts"] and "eager" in view["timer"]
    assert script.main(argv + ["--skip-done"]) == 0  # everything done: nothing appended
    assert len(_lines(out)) == 2


def test_offload_script_refuses_cuda_without_a_gpu(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from benchmarks import measure_offload_synced as script
    assert script.main(["--out", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_offload_script_stops_after_a_failed_capture_or_an_error(tmp_path, monkeypatch):
    """Status 3 after a record whose capture failed, or a configuration that raised (written as
    a failed record), so benchmarks/gpu_offload.sh resumes the rest in a fresh process."""
    import kvsim.runtime.measure as harness
    from benchmarks import measure_offload_synced as script
    out = tmp_path / "off.jsonl"
    argv = ["--out", str(out), "--methods", "dense,sparq", "--offload", "0.5", "--seqs", "80", "--device", "cpu"]
    monkeypatch.setattr(harness, "measure", lambda **kw: {"method": kw["method"], "seq": kw["seq"],
                                                          "offload": kw["offload"], "batch": 1, "fits": True,
                                                          "timer": "cuda events, eager (not capturable: X)"})
    assert script.main(argv) == 3 and [r["method"] for r in _lines(out)] == ["dense"]

    def broken(**kw):
        raise RuntimeError("CUDA error: an illegal memory access")
    monkeypatch.setattr(harness, "measure", broken)
    assert script.main(argv + ["--skip-done"]) == 3
    failed = _lines(out)[-1]
    assert failed["source"] == "failed" and failed["method"] == "sparq" and "illegal" in failed["error"]
    assert script.main(argv + ["--skip-done"]) == 0  # both done now
