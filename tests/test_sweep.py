"""Sweeps: the grid, equality with predict at sampled points, the files and the progress bar."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kvsim.errors import KvsimError
from kvsim.predict import predict
from kvsim.records import CSV_COLUMNS
from kvsim.sweep import Progress, check_params, gpu_profiles, sweep

ROOT = Path(__file__).resolve().parent.parent
SEQS, BATCHES = [4096, 16384, 131072], [1, 3, 16]


def test_sweep_equals_predict_at_sampled_points():
    result = sweep(["h100", "rtx3090"], ["dense", "sparq", "quest"], SEQS, BATCHES, gpus=[1, 2],
                   model="llama-3.1-8b", progress=False)
    assert len(result.records) == 2 * 3 * 2 * len(SEQS) * len(BATCHES) and not result.skipped
    rng = np.random.default_rng(7)
    for index in rng.choice(len(result.records), size=12, replace=False):
        row = result.records[index]
        direct = predict(row["hw"], row["method"], seq=row["seq"], batch=row["batch"], model=row["model"],
                         gpus=row["gpus"])
        for key, value in (("latency_s", direct.latency_s), ("hbm_bytes", direct.hbm_bytes),
                           ("flops", direct.flops), ("memory_bytes", direct.memory_bytes),
                           ("kv_bytes", direct.kv_bytes), ("pcie_bytes", direct.pcie_bytes)):
            assert row[key] == pytest.approx(float(value), rel=1e-12, abs=1e-30), key
        assert row["fits"] == bool(direct.fits)
        assert row["attention"]["latency_s"] == pytest.approx(float(direct.attention()["latency_s"]))


def test_sweep_with_generation_matches_predict():
    result = sweep(["h100"], ["dense"], [4096, 8192], [2], gen=16, progress=False)
    for row in result.records:
        direct = predict("h100", seq=row["seq"], batch=2, gen=16)
        assert row["generation"]["total_s"] == pytest.approx(float(direct.generation.total_s))


def test_grid_covers_every_point_once():
    result = sweep(["l40s"], ["dense"], [8192, 4096, 8192], [4, 1], progress=False)
    assert sorted((r["seq"], r["batch"]) for r in result.records) == [(4096, 1), (4096, 4), (8192, 1), (8192, 4)]


def test_params_reach_the_methods_that_have_them():
    narrow = sweep(["h100"], ["quest", "dense"], [65536], [1], params={"budget": 1024}, progress=False)
    wide = sweep(["h100"], ["quest", "dense"], [65536], [1], params={"budget": 8192}, progress=False)
    quest = [r for r in narrow.records + wide.records if r["method"] == "quest"]
    assert quest[0]["params"]["budget"] == 1024 and quest[0]["hbm_bytes"] < quest[1]["hbm_bytes"]
    dense = [r for r in narrow.records + wide.records if r["method"] == "dense"]
    assert dense[0]["hbm_bytes"] == dense[1]["hbm_bytes"]
    with pytest.raises(KvsimError, match="belongs to none"):
        check_params(["dense"], {"budget": 1})


def test_all_means_the_gpu_profiles():
    names = {p.name for p in gpu_profiles()}
    assert {"h100-sxm", "rtx-3090", "l40s"} <= names and "epyc-7763" not in names


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_bar_only_after_a_second():
    clock, out = _Clock(), io.StringIO()
    bar = Progress(4, "sweep", stream=out, clock=clock)
    bar.step()
    clock.now = 0.5
    bar.step()
    assert out.getvalue() == ""
    clock.now = 1.5
    bar.step()
    bar.close()
    assert "sweep [" in out.getvalue() and "3/4" in out.getvalue() and out.getvalue().endswith("\n")
    quiet = io.StringIO()
    fast = Progress(2, "sweep", stream=quiet, clock=_Clock())
    fast.step(2)
    fast.close()
    assert quiet.getvalue() == ""


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_sweep_command_csv(tmp_path):
    out = kvsim("sweep", "--hw", "h100,rtx3090", "--method", "dense,quest", "--seq", "4k..32k", "--batch", "1,8")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 2 * 2 * 4 * 2
    assert sorted({int(r["seq"]) for r in rows}) == [4096, 8192, 16384, 32768]  # doubling
    row = rows[5]
    direct = predict(row["hw"], row["method"], seq=int(row["seq"]), batch=int(row["batch"]))
    assert float(row["latency_s"]) == pytest.approx(float(direct.latency_s))


def test_sweep_command_jsonl_file(tmp_path):
    path = tmp_path / "out" / "sweep.jsonl"
    out = kvsim("sweep", "--hw", "h100", "--seq", "8k,64k", "--gpus", "1,2", "--out", str(path))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 4 and {r["gpus"] for r in records} == {1, 2}
    assert "wrote 4 rows" in out.stderr


@pytest.mark.parametrize("args,words", [
    (["--hw", "h100", "--seq", "128k..4k"], "ends before it starts"),
    (["--hw", "h100", "--seq", "lots"], "cannot read 'lots'"),
    (["--hw", "h100", "--seq", "4k", "--batch", "0"], "positive whole number"),
    (["--hw", "nope", "--seq", "4k"], "unknown hardware 'nope'"),
    (["--hw", "h100", "--seq", "4k", "--method", "dense,nope"], "unknown method 'nope'"),
])
def test_sweep_errors_are_one_line(args, words):
    out = kvsim("sweep", *args)
    assert out.returncode == 2
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_every_combination_skipped_is_an_error():
    out = kvsim("sweep", "--hw", "h100", "--seq", "4k", "--gpus", "3", "--model", "llama-3.1-70b")
    assert out.returncode == 2 and "every combination was skipped" in out.stderr
    assert "dense on h100-sxm x3" in out.stderr and len(out.stderr.strip().splitlines()) == 1
