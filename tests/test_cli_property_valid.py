"""Property test of the command line, well-formed inputs (answers with finite, non-negative
numbers), every kind of output path, and the installed entry point run as a person runs it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_cli_inputs import (GOOD_HW, GOOD_MODEL, OLD, ROOT, TRIED, _complete_plot, _complete_text,  # noqa: E402
                             check_quantities, examples, make_path, run_checked)


def teardown_module():
    print(f"\nCLI property test: {TRIED['inputs']} inputs tried so far "
          f"(exit 0: {TRIED[0]}, 1: {TRIED[1]}, 2: {TRIED[2]})")


@examples(120)
@given(hw=GOOD_HW, method=st.sampled_from(["dense", "sparq", "quest", "h2o", "streamingllm", "alisa", "adore",
                                           "tidaldecode", "duoattention", "all"]),
       seq=st.sampled_from(["1", "17", "4k", "32k", "128k", "517k", "1M", "2M"]),
       batch=st.sampled_from(["1", "3", "8", "64", "1k", "100k"]), gen=st.sampled_from(["0", "1", "16", "5000"]),
       gpus=st.sampled_from(["1", "1", "2", "4", "8", "3"]), offload=st.sampled_from(["0", "0", "0.25", "1"]),
       model=GOOD_MODEL, dtype=st.sampled_from([None, "bf16", "fp16", "fp32", "fp8"]),
       kv=st.sampled_from([None, "bf16", "fp8", "int8", "fp32"]), fmt=st.sampled_from(["table", "json", "csv"]))
def test_predict_valid(hw, method, seq, batch, gen, gpus, offload, model, dtype, kv, fmt):
    """Well-formed requests: an answer (0 or 1) or one line why not; finite, non-negative numbers."""
    argv = ["predict", "--hw", hw, "--method", method, "--seq", seq, "--batch", batch, "--gen", gen,
            "--gpus", gpus, "--offload", offload, "--model", model, "--format", fmt]
    argv += ["--dtype", dtype] if dtype else []
    argv += ["--kv-dtype", kv] if kv else []
    run_checked(argv)


@examples(20)
@given(hw=st.lists(GOOD_HW, min_size=1, max_size=2).map(",".join), model=GOOD_MODEL,
       method=st.sampled_from(["dense", "sparq,dense", "all", "quest,h2o"]),
       seq=st.sampled_from(["1k,8k,16k", "4k..128k", "1..1M", "517k"]), batch=st.sampled_from(["1", "1,8", "1..64"]),
       gpus=st.sampled_from(["1", "1,2"]), param=st.sampled_from([None, "k=4096", "budget=2048"]),
       fmt=st.sampled_from(["csv", "jsonl"]))
def test_sweep_valid(hw, model, method, seq, batch, gpus, param, fmt):
    argv = ["sweep", "--hw", hw, "--model", model, "--method", method, "--seq", seq, "--batch", batch,
            "--gpus", gpus, "--format", fmt]
    argv += ["--param", param] if param else []
    run_checked(argv)


@examples(20)
@given(hw=st.lists(GOOD_HW, min_size=1, max_size=2).map(",".join), model=GOOD_MODEL,
       seq=st.sampled_from(["4k", "128k", "1M"]), gpus=st.sampled_from(["1", "1,2", "1,8"]),
       tpot=st.sampled_from([None, "0.001", "20", "1e6"]), fmt=st.sampled_from(["table", "json"]))
def test_plan_valid(hw, model, seq, gpus, tpot, fmt):
    argv = ["plan", "--hw", hw, "--model", model, "--seq", seq, "--gpus", gpus, "--method", "dense,streamingllm",
            "--format", fmt]
    argv += ["--tpot-ms", tpot] if tpot else []
    run_checked(argv)


# ---- the installed entry point, as a person runs it ------------------------------------------

@pytest.mark.parametrize("argv, status", [
    (["predict", "--hw", "h100", "--seq", "1e309"], 2),
    (["predict", "--hw", "rtx3090", "--seq", "128k", "--batch", "4"], 1),
    (["predict", "--hw", "epyc", "--seq", "4k", "--gpus", "2"], 2),
    (["sweep", "--hw", "h100", "--seq", "4k", "--out", "/dev/full"], 2),
])
def test_subprocess_smoke(argv, status, tmp_path):
    done = subprocess.run([sys.executable, "-m", "kvsim", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    check_quantities(done.stdout)


def test_plan_progress_stays_out_of_a_redirected_stderr(tmp_path):
    log = tmp_path / "log"
    with log.open("w") as err:
        done = subprocess.run([sys.executable, "-m", "kvsim", "plan", "--seq", "32k", "--format", "json"],
                              stdout=subprocess.PIPE, stderr=err, cwd=ROOT, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    assert "\r" not in log.read_text() and "[#" not in log.read_text()
    check_quantities(done.stdout.decode())


@pytest.mark.parametrize("kind", ["new", "existing", "symlink", "dangling", "dir", "fifo", "devnull", "devfull",
                                  "under_file", "no_folder", "proc"])
@pytest.mark.parametrize("command", ["sweep_out", "predict_plot", "sweep_out_bad_plot"])
def test_every_kind_of_output_path(kind, command, tmp_path):
    """Each kind of path, with arguments that otherwise succeed."""
    suffix = ".png" if command == "predict_plot" else ".csv"
    given_path, final = make_path(tmp_path, kind, suffix)
    argv = {"sweep_out": ["sweep", "--hw", "h100", "--seq", "4k,8k", "--out", given_path],
            "predict_plot": ["predict", "--hw", "h100", "--seq", "8k", "--plot", given_path],
            "sweep_out_bad_plot": ["sweep", "--hw", "h100", "--seq", "4k", "--out", given_path,
                                   "--plot", str(tmp_path / "x.xyz")]}[command]
    writes = kind in ("new", "existing", "symlink", "dangling", "no_folder") and command != "sweep_out_bad_plot"
    status, _, err = run_checked(argv, tmp_path, given_path, final,
                                 _complete_plot if command == "predict_plot" else _complete_text)
    assert status == (0 if writes else 2), err
    if writes:
        assert final.read_bytes() != OLD and final.stat().st_size > 100
        if kind in ("symlink", "dangling"):
            assert Path(given_path).is_symlink(), "the link was replaced by a file"
