"""`kvsim schedule` as a person uses it: the table, the JSON keys, the plot, one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ("schedule", "--hw", "v100-32gb", "--model", "opt-13b", "--method", "alisa", "--batch", "16",
        "--prompt", "128", "--gen", "96")


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_schedule_table():
    out = kvsim(*BASE)
    assert out.returncode == 0, out.stderr
    for words in ("p1 =", "p2 =", "alpha", "beta", "throughput", "peak GPU memory", "peak CPU memory",
                  "Phase I", "Phase II", "Phase III", "flexgen", "vllm", "overlap"):
        assert words in out.stdout


def test_schedule_json_and_plot(tmp_path):
    plot = tmp_path / "schedule.png"
    out = kvsim(*BASE, "--kv-bits", "8", "--format", "json", "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    for key in ("phases", "throughput_tok_s", "peak_gpu_bytes", "gpu_capacity_bytes", "peak_cpu_bytes",
                "baselines"):
        assert key in record
    assert set(record["phases"]) >= {"p1", "p2", "alpha", "beta", "time_s", "steps"}
    assert record["kv_dtype"] == "int8" and record["params"]["kv_bits"] == 8
    assert record["peak_gpu_bytes"] <= record["gpu_capacity_bytes"]
    for name in ("flexgen", "vllm"):
        assert record["baselines"][name]["throughput_tok_s"] > 0
    times = record["phases"]["time_s"]
    assert sum(times.values()) == __import__("pytest").approx(record["total_s"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_schedule_dense_and_auto_batch():
    out = kvsim("schedule", "--hw", "v100-32gb", "--model", "opt-6.7b", "--method", "dense", "--batch", "auto",
                "--max-batch", "32", "--gen", "32", "--no-baselines", "--format", "json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["batch"] in (1, 2, 4, 8, 12, 16, 24, 32) and record["baselines"] == {}
    assert record["search"]["batches"][str(record["batch"])] == max(record["search"]["batches"].values())


def test_schedule_errors_are_one_line():
    for args in (("--hw", "nope"), ("--kv-bits", "4"), ("--batch", "0"), ("--hw", "epyc-7763"),
                 ("--method", "nope"), ("--plot", "/dev/null/x.png")):
        merged = dict(zip(BASE[1::2], BASE[2::2]))
        merged.update(dict(zip(args[::2], args[1::2])))
        out = kvsim("schedule", *[x for kv in merged.items() for x in kv])
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("kvsim: error:"), out.stderr
