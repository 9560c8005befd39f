"""benchmarks/measure_offload_synced.py (run as a script, as benchmarks/gpu_offload.sh runs it)
and the synced timing of runtime/measure.py on the CPU, on a tiny model; graph capture needs
CUDA (tests/gpu/test_offload_graph_gpu.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "measure_offload_synced.py"
TINY = """name: tiny-llama
family: llama
n_layers: 4
d_model: 256
n_heads: 8
n_kv_heads: 2
head_dim: 32
ffn_dim: 512
vocab: 1000
max_context: 4096
mlp: swiglu
norm: rmsnorm
source: test
"""


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run(tmp_path, *args):
    model = tmp_path / "tiny.yaml"
    model.write_text(TINY)
    argv = ["--model", str(model), "--offload", "0.5", "--seqs", "80", "--batch", "1", "--layers", "4",
            "--steps", "2", "--warmup", "1", "--device", "cpu", *args]
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=600)


def test_offload_script_records_synced_times_cut_params_and_resumes(tmp_path):
    out, synced = tmp_path / "off.jsonl", tmp_path / "synced.jsonl"
    args = ("--out", str(out), "--synced-out", str(synced), "--methods", "dense,tidaldecode")
    done = _run(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-500:]
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
        assert "timed_contexts" not in view and view["l2_flush_bytes"] == 0  # flushed before a sync
        assert view["eager"]["host_probe_s"] == rec["eager"]["host_probe_s"]
    again = _run(tmp_path, *args, "--skip-done")  # everything done: nothing appended
    assert again.returncode == 0 and len(_lines(out)) == 2


def test_offload_script_stops_after_an_error_and_resumes_after_it(tmp_path):
    """A configuration that raises is written as a failed record and the script exits with
    status 3 (benchmarks/gpu_offload.sh then resumes the rest in a fresh process)."""
    out = tmp_path / "off.jsonl"
    failed = _run(tmp_path, "--out", str(out), "--methods", "h2o")  # H2O's cache cannot be offloaded
    assert failed.returncode == 3
    rec = _lines(out)[-1]
    assert rec["source"] == "failed" and rec["method"] == "h2o" and "offload" in rec["error"]
    assert _run(tmp_path, "--out", str(out), "--methods", "h2o", "--skip-done").returncode == 0


def test_offload_script_refuses_cuda_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
