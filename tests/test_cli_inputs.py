"""Inputs and checks for the CLI property tests (test_cli_property*.py); no tests here.

Property test of the command line: hypothesis draws argument vectors and files (sizes, names,
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
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
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


GOOD_HW = st.sampled_from(["h100", "h200", "a100", "a100-40gb", "l40s", "rtx3090", "rtx4090", "v100", "h100-pcie",
                           "h100-sxm.calibrated", "epyc", "cpu"])
GOOD_MODEL = st.sampled_from(["llama-3.1-8b", "llama-2-7b", "llama-3.1-70b", "opt-13b", "mistral-7b-v0.2"])
