"""Defects a fuzzing pass over every command found (2026-12-08), each as a person would hit it:
one line and exit 2, and no file written where it should not be."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_cli_defects import MEASURED, ROOT, refused, run

PROFILE = ROOT / "hw_profiles" / "h100-sxm.yaml"


@pytest.mark.parametrize("argv, words", [
    (["calibrate", MEASURED, "--hw", "h100", "--out", ""], "--out is empty"),
    (["predict", "--hw", "h100", "--method", "dense", "--seq", "4k", "--plot", " "], "--plot is empty"),
    (["sweep", "--hw", "h100", "--seq", "4k", "--out", ""], "--out is empty"),
    (["validate", ""], "a file name is empty"),
    (["validate", MEASURED, "--hw", ""], "--hw is empty"),
    (["sweep", "--hw", "", "--seq", "4k"], "--hw is empty"),
])
def test_an_empty_option_is_refused_never_taken_as_not_given(argv, words):
    before = PROFILE.read_bytes()
    refused(*argv, words=words)
    assert PROFILE.read_bytes() == before  # calibrate's default target, the shipped profile, untouched


@pytest.mark.parametrize("argv, words", [
    (["sweep", "--hw", ",", "--seq", "4k"], "an empty name"),
    (["sweep", "--hw", "h100,", "--seq", "4k"], "an empty name"),
    (["sweep", "--hw", "h100", "--method", "dense,,h2o", "--seq", "4k"], "an empty name"),
    (["sweep", "--hw", "h100", "--seq", "4k,,8k"], "an empty entry"),
    (["sweep", "--hw", "h100", "--seq", "4k", "--batch", ",,"], "an empty entry"),
])
def test_lists_with_empty_entries_are_refused(argv, words):
    refused(*argv, words=words)


def test_schedule_refuses_more_steps_than_it_plans_before_building_them():
    refused("schedule", "--hw", "v100-32gb", "--model", "opt-13b", "--method", "alisa", "--gen", "16G",
            words="--gen must be 1 to 1048576")


@pytest.mark.parametrize("price", [".inf", "1e400", "2e6", "true", "'3'"])
def test_prices_must_be_finite_numbers_below_a_million_an_hour(tmp_path, price):
    path = tmp_path / "prices.yaml"
    path.write_text(f"prices:\n  h100-sxm:\n    usd_per_gpu_hour: {price}\n    provider: x\n"
                    "    source: a test\n    checked: 2026-12-08\n")
    refused("plan", "--seq", "32k", "--hw", "h100", "--gpus", "1", "--prices", path, words="usd_per_gpu_hour")


@pytest.mark.parametrize("field, value", [("memory_bytes", float("nan")), ("memory_bytes", -1.0),
                                          ("eager", {"latency_s": float("nan")})])
def test_a_record_with_a_nan_memory_or_eager_time_is_a_broken_file(tmp_path, field, value):
    record = json.loads(MEASURED.read_text().splitlines()[0])
    record[field] = value
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(record) + "\n")
    for command in ("validate", "calibrate"):
        refused(command, path, *(["--hw", "h100", "--out", tmp_path / "p.yaml"] if command == "calibrate" else []),
                words=f"field '{field}'")


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "kept.csv"
    path.write_text("mine\n")
    path.chmod(0o444)
    refused("sweep", "--hw", "h100", "--seq", "4k", "--out", path, words="is read-only")
    assert path.read_text() == "mine\n"
    png = tmp_path / "kept.png"
    png.write_bytes(b"not a plot")
    png.chmod(0o444)
    refused("predict", "--hw", "h100", "--method", "dense", "--seq", "4k", "--plot", png, words="is read-only")
    assert png.read_bytes() == b"not a plot"


def test_out_and_plot_naming_one_file_is_refused(tmp_path):
    same = tmp_path / "same.png"
    refused("sweep", "--hw", "h100", "--seq", "4k", "--out", same, "--plot", same, words="name the same file")
    assert not same.exists()
    status, _, _ = run("sweep", "--hw", "h100", "--seq", "4k", "--out", tmp_path / "a.csv")
    assert status == 0 and (tmp_path / "a.csv").exists()


def test_the_command_line_refuses_an_empty_option_in_one_line():
    out = subprocess.run([sys.executable, "-m", "kvsim", "sweep", "--hw", "", "--seq", "4k"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert yaml.safe_load(PROFILE.read_text())["name"] == "h100-sxm"


def test_offload_needs_a_gpu_with_a_host_link():
    refused("predict", "--hw", "epyc", "--method", "dense", "--seq", "4k", "--offload", "0.5",
            words="not a GPU with a host link")
    status, out, _ = run("predict", "--hw", "h100", "--method", "dense", "--seq", "4k", "--offload", "0.5")
    assert status == 0 and "PCIe bytes" in out


def test_plan_says_why_no_option_fits():
    status, _, err = run("plan", "--seq", "32k", "--hw", "h100", "--gpus", "3")
    assert status == 1 and err.strip().splitlines()[-1] == (
        "no option fits: llama-3.1-8b: 32 query heads do not split over 3 GPUs")
