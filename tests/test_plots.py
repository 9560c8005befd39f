"""Plots: each chart is written whole, with labelled axes, and matplotlib stays off the start-up path."""
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kvsim import plots  # noqa: E402
from kvsim.errors import KvsimError  # noqa: E402
from kvsim.methods import METHODS  # noqa: E402
from kvsim.plan import plan  # noqa: E402
from kvsim.predict import predict  # noqa: E402
from kvsim.sweep import sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000


def _preds():
    return [predict("h100", m, seq=65536, batch=4) for m in ("dense", "sparq", "quest")]


def test_roofline_places_every_op_under_the_roof():
    fig, ax = plt.subplots()
    preds = _preds()
    plots.roofline_axes(ax, preds)
    assert "FLOP per HBM byte" in ax.get_xlabel() and "TFLOP/s" in ax.get_ylabel()
    peak = preds[0].hw.compute.peak("bf16") / 1e12
    bandwidth = preds[0].hw.memory.bandwidth_Bps.value / 1e12
    placed = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    assert sum(len(p) for p in placed) == sum(len(plots._op_points(p)) for p in preds)
    for offsets in placed:
        for x, y in offsets:
            assert y <= min(peak, bandwidth * x) * (1 + 1e-9)  # nothing beats the roofline
    plt.close(fig)


def test_breakdown_bars_sum_to_the_step():
    fig, ax = plt.subplots()
    preds = _preds()
    plots.breakdown_axes(ax, preds)
    assert "(ms)" in ax.get_xlabel()
    widths = {}
    for patch in ax.patches:
        row = round(patch.get_y() + patch.get_height() / 2)
        widths[row] = widths.get(row, 0) + patch.get_width()
    for row, pred in enumerate(preds):
        assert widths[row] == pytest.approx(float(pred.latency_s) * 1e3)
    plt.close(fig)


def test_predict_figure(tmp_path):
    path = tmp_path / "predict.png"
    plots.predict_figure(_preds(), path)
    assert _is_png(path)


def test_sweep_figure(tmp_path):
    result = sweep(["h100", "rtx3090"], ["dense", "quest"], [4096, 32768, 131072], [1, 8], progress=False)
    path = tmp_path / "sweep.png"
    plots.sweep_figure(result.records, path)
    assert _is_png(path)


def test_plan_figure(tmp_path):
    options = plan("llama-3.1-8b", 32768, ["h100", "l40s"], ["dense", "quest"], [1, 2], tpot_ms=15)
    path = tmp_path / "plan.png"
    plots.plan_figure(options, 15, path, title="llama-3.1-8b at 32k")
    assert _is_png(path)
    unpriced = [o for o in options if not o.fits]
    with pytest.raises(KvsimError, match="nothing to plot"):
        plots.plan_figure(unpriced, 15, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("command", [
    ["predict", "--hw", "rtx3090", "--seq", "16k", "--method", "all"],
    ["predict", "--hw", "h100", "--seq", "32k", "--method", "sparq", "--batch", "4"],
    ["sweep", "--hw", "h100", "--seq", "4k..64k", "--method", "dense,quest", "--batch", "1,4"],
    ["plan", "--seq", "32k", "--hw", "h100,l40s", "--method", "dense,quest", "--gpus", "1,2", "--tpot-ms", "20"],
])
def test_plot_option_on_the_commands(tmp_path, command):
    path = tmp_path / "chart.png"
    out = kvsim(*command, "--plot", str(path))
    assert out.returncode == 0, out.stderr
    assert _is_png(path)


def test_matplotlib_is_not_imported_at_start_up():
    code = "import sys, kvsim.cli; kvsim.cli.build_parser(); print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_sweep_figure_for_every_method_on_two_gpus_stays_readable(tmp_path):
    """Small multiples (a column per hardware), one legend beside them (no legend over the ticks),
    the model in the title."""
    result = sweep(["h100", "rtx3090"], list(METHODS), [4096, 32768, 131072], [1, 8], progress=False)
    path = tmp_path / "sweep.png"
    captured = {}
    real_close = plt.close
    plt.close = lambda fig=None: captured.setdefault("fig", fig)  # keep the figure to inspect it
    try:
        plots.sweep_figure(result.records, path, title="llama-3.1-8b")
    finally:
        plt.close = real_close
    fig = captured["fig"]
    assert _is_png(path) and len(fig.axes) == 4
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(METHODS) <= set(labels) and len(labels) <= len(METHODS) + 4  # methods, batches, capacity, misses
    assert "llama-3.1-8b" in fig._suptitle.get_text()
    plt.close(fig)


def test_plan_axes_name_the_method_of_each_point():
    options = plan("llama-3.1-8b", 32768, ["h100", "l40s"], ["dense", "quest", "streamingllm"], [1, 2], tpot_ms=15)
    fig, ax = plt.subplots()
    plots.plan_axes(ax, options, 15)
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    shown = {o.method for o in options if o.fits and o.usd_per_mtok}
    assert shown <= labels
    markers = {m: plots.METHOD_MARKERS[i] for i, m in enumerate(dict.fromkeys(
        o.method for o in options if o.fits and o.usd_per_mtok))}
    assert len(set(markers.values())) == len(markers)  # one marker per method
    plt.close(fig)


def test_validate_plot_keeps_offloaded_runs_apart(tmp_path):
    from kvsim.records import measured_records
    from kvsim.validate import compare, group, plot

    files = [ROOT / "benchmarks" / "results" / "h100-offload.jsonl"]
    rows = compare(measured_records(files), None, [])
    groups = {group(r.record) for r in rows}
    assert any("offload" in g for g in groups)
    captured = {}
    real_close = plt.close
    plt.close = lambda fig=None: captured.setdefault("fig", fig)
    try:
        plot(rows, tmp_path / "validate.png")
    finally:
        plt.close = real_close
    labels = {t.get_text() for t in captured["fig"].axes[0].get_legend().get_texts()}
    assert groups <= labels
    plt.close(captured["fig"])


def test_the_simulator_never_imports_torch_or_triton():
    """predict, plan, schedule and validate run without torch or triton: the runtime and kernel
    modules beside each method's cost model (kvsim/methods/*/runtime.py, kernels.py) load only
    with the reference runtime."""
    code = ("import sys, kvsim.cli as c\n"
            "for argv in (['predict', '--hw', 'h100', '--method', 'all', '--seq', '64k'],\n"
            "             ['schedule', '--hw', 'h100', '--model', 'opt-6.7b', '--layers', '4', '--gen', '64'],\n"
            "             ['validate', 'benchmarks/results/h100-schedule.jsonl'],\n"
            "             ['plan', '--model', 'llama-3.1-8b', '--seq', '32k', '--tpot-ms', '50']):\n"
            "    c.main(argv)\n"
            "print('torch' in sys.modules, 'triton' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip().splitlines()[-1] == "False False"
