"""The command line as a person uses it: output, JSON schema, does-not-fit (exit 1) and one-line
errors (exit 2)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def kvsim(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_predict_table():
    out = kvsim("predict", "--hw", "h100", "--method", "dense", "--seq", "128k")
    assert out.returncode == 0, out.stderr
    for words in ("latency per step", "tokens/s", "HBM bytes", "PCIe bytes", "KV cache",
                  "GPU memory", "layers/attn/decode"):
        assert words in out.stdout


def test_predict_json_schema():
    out = kvsim("predict", "--hw", "h100", "--seq", "32k", "--batch", "4", "--gen", "8", "--format", "json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    for key in ("hw", "model", "method", "params", "batch", "seq", "flops", "hbm_bytes", "pcie_bytes",
                "latency_s", "memory_bytes", "kv_bytes", "fits", "attention", "breakdown", "generation"):
        assert key in record
    assert record["seq"] == 32768 and record["batch"] == 4 and record["fits"] is True
    assert set(record["attention"]) >= {"flops", "hbm_bytes", "pcie_bytes", "latency_s"}
    op = record["breakdown"][0]
    assert set(op) >= {"name", "flops", "hbm_bytes", "pcie_bytes", "time_s", "bound"}
    assert sum(o["time_s"] for o in record["breakdown"]) == pytest.approx(record["latency_s"])


def test_predict_csv():
    out = kvsim("predict", "--hw", "rtx3090", "--seq", "4096", "--model", "llama-2-7b", "--format", "csv")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.strip().splitlines()
    assert header.startswith("hw,model,method") and row.startswith("rtx-3090,llama-2-7b,dense")


def test_catalog_commands():
    assert "h100-sxm" in kvsim("hw", "list").stdout
    shown = kvsim("hw", "show", "h100")
    assert "bandwidth_Bps" in shown.stdout and "nvidia.com" in shown.stdout
    assert "llama-3.1-70b" in kvsim("models").stdout
    assert "dense" in kvsim("methods").stdout


def test_does_not_fit_is_an_answer():
    out = kvsim("predict", "--hw", "rtx3090", "--seq", "128k", "--batch", "4")
    assert out.returncode == 1
    assert "DOES NOT FIT" in out.stdout
    assert out.stderr.strip().startswith("does not fit: needs") and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["predict", "--hw", "h900", "--seq", "4k"], "unknown hardware 'h900'"),
    (["predict", "--hw", "h100", "--seq", "4k", "--model", "gpt9"], "unknown model 'gpt9'"),
    (["predict", "--hw", "h100", "--seq", "4k", "--method", "magic"], "unknown method 'magic'"),
    (["predict", "--hw", "h100", "--seq", "12q"], "cannot read '12q'"),
    (["predict", "--hw", "h100", "--seq", "4k", "--batch", "0"], "argument --batch: a number must be a positive whole number"),
    (["predict", "--hw", "h100", "--seq", "-5"], "argument --seq: cannot read '-5' as a token count"),
    (["predict", "--hw", "h100", "--seq", "4k", "--param", "x"], "name=value"),
    (["predict", "--hw", "h100", "--seq", "4k", "--param", "x=1"], "unknown parameter 'x'"),
    (["predict", "--hw", "h100"], "--seq"),
    (["predict", "--hw", "missing.yaml", "--seq", "4k"], "does not exist"),
    (["hw", "show", "nope"], "unknown hardware"),
    (["frobnicate"], "invalid choice"),
])
def test_errors_are_one_line_exit_2(args, words):
    out = kvsim(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert words in lines[0]


def test_broken_profile_file_is_named(tmp_path):
    broken = tmp_path / "mine.yaml"
    broken.write_text("name: mine\nkind: gpu\n")
    out = kvsim("predict", "--hw", str(broken), "--seq", "4k")
    assert out.returncode == 2 and "mine.yaml: field" in out.stderr
