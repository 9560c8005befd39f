"""Each reported first-contact defect, as a person would hit it, run in-process: one clean answer,
the exit-status convention (0 answer, 1 "no", 2 bad input), files complete or untouched."""
import contextlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from kvsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "benchmarks" / "results" / "h100-sweep.jsonl"


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    assert "Traceback" not in err.getvalue()
    return status, out.getvalue(), err.getvalue()


def refused(*argv, words: str = "") -> str:
    status, out, err = run(*argv)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("kvsim: error: "), (status, err)
    assert words in lines[0], lines[0]
    return lines[0]


# 1, 14: sizes
@pytest.mark.parametrize("option, value, words", [
    ("--seq", "1e309", "argument --seq: a token count must be a finite number"),
    ("--seq", "1e30", "at most 1T"),
    ("--batch", "0", "argument --batch"),
    ("--gpus", "x", "argument --gpus"),
    ("--gen", "-1", "argument --gen"),
])
def test_sizes_name_their_option(option, value, words):
    argv = ["predict", "--hw", "h100", "--seq", "4k"] + [option, value]
    refused(*argv, words=words)


def test_suffixes_are_accepted_alike_in_predict_sweep_and_plan():
    assert run("predict", "--hw", "h100", "--seq", "4k", "--batch", "1k", "--gen", "1k", "--format", "json")[0] in (0, 1)
    assert run("sweep", "--hw", "h100", "--seq", "4k", "--batch", "1k")[0] == 0
    assert run("plan", "--hw", "h100", "--seq", "4k", "--batch", "1k", "--method", "dense", "--gpus", "1")[0] in (0, 1)
    refused("sweep", "--hw", "h100", "--seq", "4k", "--gpus", "0", words="argument --gpus: a number")


def test_huge_contexts_print_plain_numbers():
    status, out, _ = run("predict", "--hw", "h100", "--seq", "1e12", "--method", "all")
    assert status == 0 and "e+" not in out


# 2: files that are not UTF-8 text, directories, devices
@pytest.mark.parametrize("content", [b"name: x\n\xff\n", b"\x00\x01\x02binary", b"\x80"])
@pytest.mark.parametrize("where", ["--hw", "--model", "--prices", "validate", "KVSIM_HW_PATH"])
def test_unreadable_files_are_one_line(tmp_path, monkeypatch, content, where):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    argv = {"--hw": ["predict", "--hw", bad, "--seq", "4k"],
            "--model": ["predict", "--hw", "h100", "--model", bad, "--seq", "4k"],
            "--prices": ["plan", "--hw", "h100", "--seq", "4k", "--prices", bad],
            "validate": ["validate", bad],
            "KVSIM_HW_PATH": ["predict", "--hw", "h100", "--seq", "4k"]}[where]
    if where == "KVSIM_HW_PATH":
        monkeypatch.setenv("KVSIM_HW_PATH", str(tmp_path))
    refused(*argv, words="bad.yaml")


@pytest.mark.parametrize("path", ["/dev/null", "/tmp"])
def test_special_files_as_profile(path):
    refused("predict", "--hw", path, "--seq", "4k", words="is not a regular file")


# 3: rates of zero, capacity of infinity
@pytest.mark.parametrize("field, value, words", [
    (("memory", "bandwidth_Bps"), 0, "greater than 0"),
    (("host_link", "h2d_Bps"), 0, "greater than 0"),
    (("memory", "capacity_bytes"), float("inf"), "finite"),
])
def test_profiles_with_zero_or_infinite_rates_are_refused(tmp_path, field, value, words):
    data = yaml.safe_load((ROOT / "hw_profiles" / "h100-sxm.yaml").read_text())
    data[field[0]][field[1]]["value"] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    refused("predict", "--hw", path, "--seq", "4k", words=words)


def test_roofline_never_divides_zero_by_zero():
    from kvsim.profiles import load_profile
    from kvsim.roofline import _over
    assert float(_over(0.0, 0.0)) == 0.0 and np.isfinite(_over(np.zeros(3), 0.0)).all()
    assert load_profile("h100").memory.bandwidth_Bps.value > 0


# 4: fp32, and GEMVs are not tiles
def test_fp32_is_predicted_memory_bound_alike_on_h100_and_h200():
    s100, out100, _ = run("predict", "--hw", "h100", "--seq", "4k", "--dtype", "fp32", "--format", "json")
    s200, out200, _ = run("predict", "--hw", "h200", "--seq", "4k", "--dtype", "fp32", "--format", "json")
    h100, h200 = json.loads(out100), json.loads(out200)
    assert s100 == s200 == 0 and h100["kv_dtype"] == "fp32"
    ratio = h100["latency_s"] / h200["latency_s"]  # same compute, 3.35 vs 4.8 TB/s
    assert 1.2 < ratio < 1.6
    assert all(op["bound"] != "compute" for op in h100["breakdown"] if "mlp" in op["name"])


def test_tile_padding_only_for_tensor_core_gemms_of_several_rows():
    from kvsim.decoder import layer_ops
    from kvsim.profiles import load_profile
    from kvsim.models import load_model
    from kvsim.roofline import _tile_padding
    from kvsim.workload import Workload
    h100, model = load_profile("h100-sxm"), load_model("llama-3.1-8b")
    for dtype, batch, tokens, padded in (("bf16", 1, 1.0, False), ("fp32", 32, 9.0, False), ("bf16", 32, 9.0, True)):
        wl = Workload(seq=4096, batch=batch, dtype=dtype, kv_dtype="bf16")
        up = next(o for o in layer_ops(model, wl, tokens=tokens) if o.name == "layers/mlp/gate_up")
        assert float(up.gemm_rows) == (1 if batch == 1 else 288)
        assert (float(np.max(_tile_padding(up, h100))) > 1) == padded, (dtype, batch)


# 5: no interconnect; 14: V100 dtypes
def test_no_interconnect_under_several_gpus_is_refused():
    refused("predict", "--hw", "epyc", "--seq", "4k", "--gpus", "2", words="--gpus must be 1")
    status, out, err = run("plan", "--hw", "epyc", "--gpus", "2", "--seq", "4k", "--format", "json")
    assert status == 1 and all(not o["meets_slo"] and not o["fits"] for o in json.loads(out))


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_v100_without_bf16_or_fp8_says_so(dtype):
    refused("predict", "--hw", "v100", "--seq", "4k", "--dtype", dtype, words=f"lists no {dtype} peak")


def test_beyond_trained_context_is_in_the_json():
    _, out, _ = run("predict", "--hw", "h100", "--model", "llama-3-8b", "--seq", "517k", "--format", "json")
    record = json.loads(out)
    assert record["beyond_trained_context"] is True and record["trained_context"] == 8192


# 6, 7, 8: output files
@pytest.mark.parametrize("command", [["predict", "--hw", "h100", "--seq", "4k"],
                                     ["sweep", "--hw", "h100", "--seq", "4k"],
                                     ["plan", "--hw", "h100", "--seq", "4k", "--method", "dense", "--gpus", "1"],
                                     ["validate", MEASURED]])
def test_unknown_plot_format_is_refused_before_any_work(tmp_path, command):
    refused(*command, "--plot", tmp_path / "p.xyz", words="cannot write a .xyz plot")
    assert list(tmp_path.iterdir()) == []


def test_sweep_out_survives_a_refused_plot(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("keep\n")
    refused("sweep", "--hw", "h100", "--seq", "4k", "--out", old, "--plot", tmp_path / "x.xyz")
    assert old.read_text() == "keep\n"


@pytest.mark.parametrize("make, words", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: os.mkfifo(p), "is a FIFO"),
    (lambda p: p.parent.joinpath("file").write_text("x") or None, None),
])
def test_out_refuses_special_files(tmp_path, make, words):
    path = tmp_path / "out.csv"
    make(path)
    if words is None:  # a path under a regular file
        refused("sweep", "--hw", "h100", "--seq", "4k", "--out", tmp_path / "file" / "out.csv", words="file is not a folder")
        return
    kind = stat.S_IFMT(path.lstat().st_mode)
    refused("sweep", "--hw", "h100", "--seq", "4k", "--out", path, words=words)
    assert stat.S_IFMT(path.lstat().st_mode) == kind


@pytest.mark.parametrize("device", ["/dev/full", "/dev/null"])
def test_out_to_a_device_node_leaves_it_a_device(device):
    refused("sweep", "--hw", "h100", "--seq", "4k", "--out", device, words="is a device")
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_out_writes_through_a_symlink(tmp_path):
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    assert run("sweep", "--hw", "h100", "--seq", "4k", "--out", link)[0] == 0
    assert link.is_symlink() and target.read_text().startswith("hw,model,")


def test_out_in_proc_and_calibrate_out_to_a_directory(tmp_path):
    refused("sweep", "--hw", "h100", "--seq", "4k", "--out", "/proc/kvsim.csv", words="cannot write")
    refused("calibrate", MEASURED, "--hw", "h100", "--out", tmp_path, words="is a directory")


# 9, 10: measured records
@pytest.mark.parametrize("line, words", [
    ("[1, 2]", "expected a JSON object"),
    ('{"source": "measured", "hw": "h100-sxm", "model": "llama-3.1-8b", "method": "dense", "seq": 4096, '
     '"batch": 1, "latency_s": "fast"}', "field 'latency_s'"),
    ('{"source": "measured", "hw": "h100-sxm", "model": "llama-3.1-8b", "method": "dense", "seq": 4096, '
     '"batch": 1, "latency_s": NaN}', "field 'latency_s'"),
    ('{"source": "measured", "hw": "h100-sxm", "model": "llama-3.1-8b", "method": "dense", "seq": 4096, '
     '"batch": 1, "latency_s": -1}', "field 'latency_s'"),
])
@pytest.mark.parametrize("command", ["validate", "calibrate"])
def test_malformed_records(tmp_path, line, words, command):
    path = tmp_path / "m.jsonl"
    path.write_text(MEASURED.read_text().splitlines()[0] + "\n" + line + "\n")
    extra = ["--hw", "h100", "--out", tmp_path / "p.yaml"] if command == "calibrate" else []
    refused(command, path, *extra, words=words)


def test_no_measured_records_says_why(tmp_path):
    refused("validate", MEASURED, "--hw", "foo", words="unknown hardware 'foo'")
    refused("validate", MEASURED, "--held-out", "-1", words="argument --held-out")
    path = tmp_path / "m.jsonl"
    path.write_text(MEASURED.read_text().splitlines()[0].replace('"method": "dense"', '"method": "magic"') + "\n")
    refused("validate", path, words="unknown method 'magic'")


def test_calibrate_refuses_another_device_and_bad_holdouts(tmp_path):
    refused("calibrate", MEASURED, "--hw", "a100", "--out", tmp_path / "p.yaml", words="measured on h100-sxm")
    for holdout in ("-0.1", "nan", "1"):
        refused("calibrate", MEASURED, "--hw", "h100", "--out", tmp_path / "p.yaml", "--holdout", holdout)
    assert list(tmp_path.iterdir()) == []


# 11: measure without CUDA
def test_measure_without_cuda_is_refused():
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    refused("measure", "--seq", "4k", words="needs a CUDA GPU")
    refused("measure", "--seq", "4k", "--device", "tpu", words="invalid choice")
    refused("measure", "--seq", "4k", "--device", "cpu", "--layers", "999", words="--layers 999")
    refused("measure", "--seq", "4k", "--device", "cpu", "--method", "sparq", "--param", "k=100000", words="k=100000")
    status, _, err = run("measure", "--seq", "1M", "--batch", "1000000", "--device", "cpu")
    assert status == 1 and err.startswith("does not fit")


# 12: a parameter that suits only some contexts
def test_sweep_keeps_sparq_where_k_fits(tmp_path):
    status, out, err = run("sweep", "--seq", "1k,8k,16k", "--method", "sparq,dense", "--param", "k=4096",
                           "--hw", "h100", "--format", "jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and sorted(r["seq"] for r in rows if r["method"] == "sparq") == [8192, 16384]
    assert "at context 1024" in err


# 13: one exit-status convention
def test_does_not_fit_exits_1_everywhere():
    assert run("predict", "--hw", "rtx3090", "--seq", "128k", "--batch", "4")[0] == 1
    assert run("predict", "--hw", "rtx3090", "--seq", "1M", "--batch", "64", "--method", "all")[0] == 1
    status, _, err = run("plan", "--hw", "rtx3090", "--model", "llama-3.1-70b", "--seq", "128k", "--gpus", "1",
                         "--method", "dense")
    assert status == 1 and err.strip()


# 15: formatting
def test_units_have_no_exponents_and_one_system():
    from kvsim.units import format_bytes, format_seconds
    assert format_bytes(999.9) == "1 kB" and format_seconds(43500) == "12.1 h"
    _, out, _ = run("predict", "--hw", "h100", "--seq", "1")
    assert "e+" not in out and "GiB" not in out and "SI units" in out


def test_hw_show_lines_stay_short():
    _, out, _ = run("hw", "show", "h100")
    assert max(len(line) for line in out.splitlines()) < 120
