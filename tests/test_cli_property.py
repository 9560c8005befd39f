"""Property test of the command line: hypothesis draws argument vectors and files (sizes, names,
numbers, YAML and JSONL content including binary and non-UTF-8 bytes, output paths including
symlinks, directories, FIFOs and device nodes) for every subcommand, runs ``kvsim.cli.main``
in-process, and checks the contract the README states:

- the exit status is 0 (an answer), 1 ("does not fit", "no option") or 2 (bad input);
- no traceback; on status 2 exactly one line on stderr;
- no NaN, infinity or negative quantity in any output (JSON parsed, CSV read);
- every file named by --out or --plot is complete or untouched, a symlink is written through
  (it stays a link), and directories, FIFOs and device nodes are refused and left as they were.

A few subprocess runs check the same for the installed entry point. The number of inputs tried is
printed at the end (``pytest -s``).
"""
import contextlib
import csv
import io
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kvsim.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "benchmarks" / "results" / "h100-sweep.jsonl"
REAL_LINES = b"".join(MEASURED.read_bytes().splitlines(keepends=True)[:12])  # dense, sparq, ... at 4k
TRIED = {"inputs": 0, 0: 0, 1: 0, 2: 0}
SCALE = float(os.environ.get("KVSIM_CLI_EXAMPLES_SCALE", "1"))  # more inputs: KVSIM_CLI_EXAMPLES_SCALE=10


def examples(n: int):
    """Hypothesis settings: ``n`` inputs (times SCALE), the same ones every run (CI stays ~2 min)."""
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck), print_blob=True)
NON_FINITE = re.compile(r"(?<![A-Za-z_])(nan|NaN|-?inf|-?Infinity)(?![A-Za-z_])")


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in this process: (status, stdout, stderr)."""
    TRIED["inputs"] += 1
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # --help
            status = exc.code or 0
    TRIED[status] = TRIED.get(status, 0) + 1
    return status, out.getvalue(), err.getvalue()


def teardown_module():
    print(f"\nCLI property test: {TRIED['inputs']} inputs tried (exit 0: {TRIED[0]}, 1: {TRIED[1]}, 2: {TRIED[2]})")


# ---- what a quantity may be ------------------------------------------------------------------

SIGNED = {"err", "worst"}  # validate's signed relative errors


def _numbers(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


def check_quantities(text: str) -> None:
    """No NaN/inf anywhere; every number in JSON or CSV output finite and (but signed errors) >= 0."""
    assert not NON_FINITE.search(text), text[:2000]
    stripped = text.strip()
    values = []
    if stripped[:1] in "[{":
        try:
            values = list(_numbers(json.loads(stripped)))
        except json.JSONDecodeError:  # several JSON lines (measure) or text
            values = [kv for line in stripped.splitlines() if line.startswith("{")
                      for kv in _numbers(json.loads(line))]
    elif stripped.startswith("hw,model,"):
        for row in csv.DictReader(io.StringIO(stripped)):
            values += [(k, float(v)) for k, v in row.items() if v and re.fullmatch(r"-?[0-9.e+-]+", v)]
    for key, number in values:
        assert math.isfinite(number), (key, number)
        assert number >= 0 or key in SIGNED, (key, number)


def check_contract(status: int, out: str, err: str) -> None:
    assert status in (0, 1, 2), (status, err)
    assert "Traceback" not in out + err, err
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kvsim: error: "), err
    if status == 1:
        assert err.strip(), "a 'no' answer says why on stderr"
    check_quantities(out)


# ---- drawn inputs ----------------------------------------------------------------------------

VALID_SIZES = st.sampled_from(["1", "4096", "4k", "32k", "128k", "8K", " 16 ", "1e3", "2k", "1M", "16", "100"])
SIZES = st.one_of(
    VALID_SIZES, VALID_SIZES, VALID_SIZES,
    st.sampled_from(["1", "4096", "4k", "32k", "128k", "1M", "8K", " 16 ", "1e3", "2k", "0", "-5", "1.5", "12q", "",
                     "1e309", "1e30", "1e12", "nan", "inf", "-inf", "0x10", "1_000", "½", "4k..16k", "1,8"]),
    st.integers(min_value=-10, max_value=2**41).map(str),
    st.text(max_size=6))
SMALL_SIZES = st.one_of(st.sampled_from(["1", "2", "4", "8", "1k", "16"]), st.sampled_from(["1", "2", "4", "8", "1k", "16"]),
                        st.sampled_from(["0", "-1", "3.5", "x", "1e309", "9999999999999"]),
                        st.integers(min_value=-3, max_value=40).map(str))
NUMBERS = st.one_of(st.sampled_from(["0", "0.5", "1", "-0.1", "nan", "inf", "1e309", "", "abc", "50", "1e-300"]),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
HW = st.sampled_from(["h100", "h200", "a100", "l40s", "rtx3090", "v100", "epyc", "cpu", "h100-sxm.calibrated",
                      "h100", "h200", "a100", "rtx4090", "nope", "", "h100,l40s", "all"])
METHOD = st.sampled_from(["dense", "sparq", "quest", "h2o", "streamingllm", "alisa", "adore", "tidaldecode",
                          "duoattention", "all", "magic", "", "dense,quest"])
MODEL = st.sampled_from(["llama-3.1-8b", "llama-2-7b", "llama-3.1-70b", "opt-13b", "gpt9"])
DTYPE = st.sampled_from([None, None, None, None, "fp32", "bf16", "fp16", "fp8", "int8", "fp4"])
PARAM = st.sampled_from([None, None, None, None, None, "k=64", "k=4096", "k=100000", "budget=2048", "x=1", "k", "k=-3", "k=nan",
                         "k=1e309", "=1", "window=abc"])
FORMAT = st.sampled_from([None, "table", "json", "csv", "yaml"])
YAML_TEXT = st.one_of(
    st.sampled_from([b"name: mine\nkind: gpu\n", b"- a\n- b\n", b"a: [\n", b"", b"\xff\xfe\x00bin", b"\x80abc: 1\n",
                     b"prices: {h100-sxm: {usd_per_gpu_hour: 0}}\n", b"prices: 3\n", b"x: " + b"[" * 200 + b"\n"]),
    st.binary(max_size=40), st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")))
JSONL_TEXT = st.one_of(
    st.sampled_from([b"[1, 2]\n", b"{}\n", b"\"x\"\n", b"not json\n", b"\xff\xfe\n", b"", b"null\n", b"{\"source\": 1}\n"]),
    st.binary(max_size=30),
    st.builds(lambda field, value: json.dumps({**json.loads(MEASURED.open().readline()), field: value}).encode() + b"\n",
              st.sampled_from(["latency_s", "seq", "batch", "method", "hw", "model", "params", "n_layers", "offload",
                               "attention", "contexts", "timed_contexts", "hbm_bytes"]),
              st.one_of(st.none(), st.integers(-5, 10**7), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=5), st.lists(st.integers(0, 9), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))))
OUT_KIND = st.sampled_from(["new", "existing", "symlink", "dangling", "dir", "fifo", "devnull", "devfull",
                            "under_file", "no_folder", "proc"])
RARELY = st.none() | st.none() | st.none()  # one_of picks a branch uniformly: a plot in one input of four
PLOT_SUFFIX = st.sampled_from([".png", ".svg", ".pdf", ".xyz", "", ".PNG", ".jpg"])
OLD = b"old content, kept unless replaced whole\n"


def _opt(name, strategy):
    return strategy.map(lambda v: [] if v is None else [name, v])


def make_path(tmp: Path, kind: str, suffix: str) -> tuple[str, Path | None]:
    """(the path given on the command line, the regular file it should end up in or None)."""
    name = tmp / f"out{suffix}"
    if kind == "existing":
        name.write_bytes(OLD)
    elif kind == "symlink":
        (tmp / f"target{suffix}").write_bytes(OLD)
        name.symlink_to(tmp / f"target{suffix}")
        return str(name), tmp / f"target{suffix}"
    elif kind == "dangling":
        name.symlink_to(tmp / f"missing{suffix}")
        return str(name), tmp / f"missing{suffix}"
    elif kind == "dir":
        name.mkdir()
        return str(name), None
    elif kind == "fifo":
        os.mkfifo(name)
        return str(name), None
    elif kind == "devnull":
        return "/dev/null", None
    elif kind == "devfull":
        return "/dev/full", None
    elif kind == "under_file":
        (tmp / "plain").write_bytes(OLD)
        return str(tmp / "plain" / f"x{suffix}"), None
    elif kind == "no_folder":  # created on writing
        return str(tmp / "no" / "such" / f"x{suffix}"), tmp / "no" / "such" / f"x{suffix}"
    elif kind == "proc":
        return f"/proc/kvsim-x{suffix}", None
    return str(name), name


def snapshot(tmp: Path) -> dict:
    return {p.name: (p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in tmp.iterdir()}


def check_files(tmp: Path, before: dict, status: int, given_path: str, final: Path | None, complete) -> None:
    """Complete or untouched; links stay links; special files untouched; no temporary files."""
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")], "a temporary file was left"
    for dev in ("/dev/null", "/dev/full"):
        assert stat.S_ISCHR(os.stat(dev).st_mode)
    for name, (mode, content) in before.items():
        path = tmp / name
        assert stat.S_IFMT(path.lstat().st_mode) == stat.S_IFMT(mode), f"{name} changed kind"
        if content is not None and (final is None or path != final):
            assert path.read_bytes() == content, f"{name} was touched"
    if final is None:
        return
    if status == 0 and final.exists() and final.read_bytes() != OLD:
        complete(final.read_bytes())
    elif status == 2 and final.name in before:
        assert final.read_bytes() == before[final.name][1]


def _complete_text(data: bytes) -> None:
    text = data.decode("utf-8")
    assert text.endswith("\n")


def _complete_plot(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" or data[:5] == b"%PDF-" or b"<svg" in data[:2000], data[:40]


def run_checked(argv, tmp=None, given_path=None, final=None, complete=None):
    before = snapshot(tmp) if tmp else {}
    status, out, err = run(argv)
    check_contract(status, out, err)
    if tmp:
        check_files(tmp, before, status, given_path, final, complete)
    return status, out, err


# ---- one property per subcommand ---------------------------------------------------------------

@examples(150)
@given(hw=HW, method=METHOD, seq=SIZES, batch=st.one_of(st.none(), SIZES), gen=st.one_of(st.none(), SMALL_SIZES),
       gpus=st.one_of(st.none(), st.none(), SMALL_SIZES), offload=st.one_of(st.none(), st.none(), NUMBERS), model=MODEL, dtype=DTYPE,
       kv=DTYPE, param=PARAM, fmt=FORMAT, plot=st.one_of(RARELY, st.tuples(OUT_KIND, PLOT_SUFFIX)))
def test_predict(hw, method, seq, batch, gen, gpus, offload, model, dtype, kv, param, fmt, plot):
    argv = ["predict", "--hw", hw, "--method", method if method != "dense,quest" else "quest", "--seq", seq,
            "--model", model]
    for name, value in (("--batch", batch), ("--gen", gen), ("--gpus", gpus), ("--offload", offload),
                        ("--dtype", dtype), ("--kv-dtype", kv), ("--param", param), ("--format", fmt)):
        argv += [] if value is None else [name, value]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        given_path, final = make_path(tmp, *plot) if plot else (None, None)
        argv += ["--plot", given_path] if plot else []
        run_checked(argv, tmp, given_path, final, _complete_plot)


GOOD_HW = st.sampled_from(["h100", "h200", "a100", "a100-40gb", "l40s", "rtx3090", "rtx4090", "v100", "h100-pcie",
                           "h100-sxm.calibrated", "epyc", "cpu"])
GOOD_MODEL = st.sampled_from(["llama-3.1-8b", "llama-2-7b", "llama-3.1-70b", "opt-13b", "mistral-7b-v0.2"])


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


@examples(60)
@given(hw=st.sampled_from(["h100", "h100,rtx3090", "epyc", "v100", "nope", "l40s"]), method=METHOD,
       seq=st.one_of(st.sampled_from(["1k,8k,16k", "4k..64k", "4k", "64k..4k", "", ",", "1e309", "1M"]), SIZES),
       batch=st.one_of(st.none(), st.sampled_from(["1,8", "1..64", "0", "8k", "x"])),
       gpus=st.one_of(st.none(), st.sampled_from(["1,2", "1,2,4,8", "3", "0", "64"])), gen=st.one_of(st.none(), SMALL_SIZES),
       dtype=DTYPE, param=PARAM, fmt=st.sampled_from([None, "csv", "jsonl"]),
       out=st.one_of(st.none(), st.tuples(OUT_KIND, st.sampled_from([".csv", ".jsonl", ""]))),
       plot=st.one_of(RARELY, st.tuples(OUT_KIND, PLOT_SUFFIX)))
def test_sweep(hw, method, seq, batch, gpus, gen, dtype, param, fmt, out, plot):
    argv = ["sweep", "--hw", hw, "--method", method, "--seq", seq]
    for name, value in (("--batch", batch), ("--gpus", gpus), ("--gen", gen), ("--dtype", dtype),
                        ("--param", param), ("--format", fmt)):
        argv += [] if value is None else [name, value]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if out:
            given_path, final = make_path(tmp, *out)
            argv += ["--out", given_path]
        if plot:
            plot_dir = tmp / "plots"
            plot_dir.mkdir()
            plot_path, _ = make_path(plot_dir, *plot)
            argv += ["--plot", plot_path]
        status, _, _ = run_checked(argv, tmp, given_path if out else None, final if out else None, _complete_text)
        if out and plot and status != 0 and final is not None and final.name in ("out.csv", "out.jsonl", "out"):
            assert not final.exists() or final.read_bytes() in (b"", OLD), "--out replaced though the plot failed"


@examples(40)
@given(seq=SIZES, hw=st.sampled_from(["h100", "h100,l40s", "epyc", "epyc,h100", "v100", "nope"]),
       method=st.sampled_from(["dense", "dense,quest", "streamingllm", "magic"]),
       gpus=st.one_of(st.none(), st.sampled_from(["1,2", "1", "2", "0", "x", "64"])),
       tpot=st.one_of(st.none(), NUMBERS), batch=st.one_of(st.none(), SMALL_SIZES), dtype=DTYPE,
       fmt=st.sampled_from([None, "table", "json"]), prices=st.one_of(st.none(), YAML_TEXT),
       plot=st.one_of(RARELY, st.tuples(OUT_KIND, PLOT_SUFFIX)))
def test_plan(seq, hw, method, gpus, tpot, batch, dtype, fmt, prices, plot):
    argv = ["plan", "--seq", seq, "--hw", hw, "--method", method]
    for name, value in (("--gpus", gpus), ("--tpot-ms", tpot), ("--batch", batch), ("--dtype", dtype),
                        ("--format", fmt)):
        argv += [] if value is None else [name, value]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if prices is not None:
            (tmp / "prices.yaml").write_bytes(prices)
            argv += ["--prices", str(tmp / "prices.yaml")]
        given_path, final = make_path(tmp, *plot) if plot else (None, None)
        argv += ["--plot", given_path] if plot else []
        run_checked(argv, tmp, given_path, final, _complete_plot)


@examples(12)
@given(hw=st.sampled_from(["v100", "rtx3090", "h100", "nope"]), model=MODEL, method=METHOD,
       batch=st.one_of(st.sampled_from(["auto", "1", "16", "0", "x"]), SMALL_SIZES), prompt=SMALL_SIZES,
       gen=SMALL_SIZES, bits=st.sampled_from([None, "8", "16", "4"]), fmt=st.sampled_from([None, "json"]),
       plot=st.one_of(RARELY, st.tuples(OUT_KIND, PLOT_SUFFIX)))
def test_schedule(hw, model, method, batch, prompt, gen, bits, fmt, plot):
    argv = ["schedule", "--hw", hw, "--model", model, "--method", method, "--batch", batch, "--prompt", prompt,
            "--gen", gen, "--max-batch", "16"]
    argv += ["--kv-bits", bits] if bits else []
    argv += ["--format", fmt] if fmt else []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        given_path, final = make_path(tmp, *plot) if plot else (None, None)
        argv += ["--plot", given_path] if plot else []
        run_checked(argv, tmp, given_path, final, _complete_plot)


@examples(50)
@given(lines=st.lists(JSONL_TEXT, max_size=3), real=st.booleans(), hw=st.sampled_from([None, "h100", "a100", "foo"]),
       held=st.one_of(st.none(), NUMBERS), fmt=st.sampled_from([None, "json"]),
       plot=st.one_of(RARELY, st.tuples(OUT_KIND, PLOT_SUFFIX)), as_dir=st.booleans())
def test_validate(lines, real, hw, held, fmt, plot, as_dir):
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        records = tmp / "records.jsonl"
        records.write_bytes((REAL_LINES if real else b"") + b"".join(lines))
        argv = ["validate", str(tmp if as_dir else records)]
        for name, value in (("--hw", hw), ("--held-out", held), ("--format", fmt)):
            argv += [] if value is None else [name, value]
        given_path, final = make_path(tmp, *plot) if plot else (None, None)
        argv += ["--plot", given_path] if plot else []
        run_checked(argv, tmp, given_path, final, _complete_plot)


@examples(10)
@given(lines=st.lists(JSONL_TEXT, max_size=2), hw=st.sampled_from(["h100", "a100", "foo", "epyc"]),
       holdout=st.one_of(st.none(), NUMBERS), methods=st.sampled_from([None, "dense", "magic"]),
       out=st.tuples(OUT_KIND, st.sampled_from([".yaml", ""])))
def test_calibrate(lines, hw, holdout, methods, out):
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        records = tmp / "records.jsonl"
        head = b"".join(MEASURED.read_bytes().splitlines(keepends=True)[:40])
        records.write_bytes(head + b"".join(lines))
        given_path, final = make_path(tmp, *out)
        argv = ["calibrate", str(records), "--hw", hw, "--out", given_path, "--methods", methods or "dense,sparq"]
        argv += ["--holdout", holdout] if holdout is not None else []
        run_checked(argv, tmp, given_path, final, lambda data: data.decode().startswith("# written by kvsim"))


@examples(60)
@given(which=st.sampled_from(["list", "show", "models", "methods"]), name=st.one_of(HW, st.text(max_size=8)),
       fmt=st.sampled_from([None, "json", "table", "x"]), content=st.one_of(st.none(), YAML_TEXT), env=st.booleans())
def test_catalog(which, name, fmt, content, env, monkeypatch):
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if content is not None:
            (tmp / "mine.yaml").write_bytes(content)
            name = str(tmp / "mine.yaml")
        monkeypatch.setenv("KVSIM_HW_PATH", str(tmp) if env else "")
        argv = {"list": ["hw", "list"], "show": ["hw", "show", name], "models": ["models"],
                "methods": ["methods"]}[which]
        argv += ["--format", fmt] if fmt and which == "show" else []
        status, out, _ = run_checked(argv)
        if status == 0 and not (fmt == "json" and which == "show"):
            assert max(len(line) for line in out.splitlines()) < 170


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="with a GPU these would run real measurements")
@examples(40)
@given(method=METHOD, seq=SIZES, batch=SMALL_SIZES, layers=st.one_of(st.none(), SMALL_SIZES),
       device=st.sampled_from([None, "cuda", "tpu", ""]), offload=st.one_of(st.none(), NUMBERS), model=MODEL,
       param=PARAM, out=st.one_of(st.none(), st.tuples(OUT_KIND, st.sampled_from([".jsonl"]))))
def test_measure(method, seq, batch, layers, device, offload, model, param, out):
    argv = ["measure", "--method", method, "--seq", seq, "--batch", batch, "--model", model]
    for name, value in (("--layers", layers), ("--device", device), ("--offload", offload), ("--param", param)):
        argv += [] if value is None else [name, value]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        given_path, final = make_path(tmp, *out) if out else (None, None)
        argv += ["--out", given_path] if out else []
        status, _, _ = run_checked(argv, tmp, given_path, final, _complete_text)
        assert status == 2  # no CUDA here: refused, never a silent CPU run


@examples(120)
@given(argv=st.lists(st.one_of(st.sampled_from(["predict", "sweep", "plan", "hw", "--hw", "--seq", "4k", "-h",
                                                 "--format", "json", "--", "--plot", "--out", "show", "x"]),
                               st.text(max_size=6)), max_size=6))
def test_any_argument_vector(argv):
    if "-h" in argv or "--help" in argv:
        return  # help prints and exits 0 by design
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
