"""Property test of the command line, hostile inputs: every subcommand with argument vectors and
files hypothesis draws (test_cli_inputs.py says what is drawn and checked). The number of inputs
tried is printed at the end (``pytest -s``)."""
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_cli_inputs import (DTYPE, FORMAT, HW, JSONL_TEXT, MEASURED, METHOD, MODEL, NUMBERS, OLD,  # noqa: E402
                             OUT_KIND, PARAM, PLOT_SUFFIX, RARELY, REAL_LINES, SIZES, SMALL_SIZES, TRIED, YAML_TEXT,
                             _complete_plot, _complete_text, examples, make_path, run_checked)


def teardown_module():
    print(f"\nCLI property test: {TRIED['inputs']} inputs tried so far "
          f"(exit 0: {TRIED[0]}, 1: {TRIED[1]}, 2: {TRIED[2]})")


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
