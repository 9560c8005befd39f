"""Charts for people: a roofline with each method's ops on it, where the time goes, latency and
memory against context, and plan's cost against latency. matplotlib is imported inside the
functions (Agg backend), so importing this module costs nothing; files are written whole."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .errors import KvsimError
from .records import write_whole_bytes
from .roofline import graph_replay_time
from .units import format_tokens

KIND_LABELS = {"attention": "attention over the cache", "linear": "weights (projections, MLP, head)",
               "elementwise": "norms, RoPE, activations", "cache": "cache upkeep",
               "transfer": "host transfers", "comm": "tensor-parallel collectives", "recompute": "recompute"}
KIND_MARKERS = {"attention": "o", "linear": "s", "elementwise": "^", "cache": "v", "transfer": "D",
                "comm": "P", "recompute": "X"}
GB = 1e9  # SI, as every byte count kvsim prints
CAPACITY_STYLE = dict(color="black", lw=3, alpha=0.3, linestyle="-")


def _pyplot():
    """pyplot on the Agg backend, unless pyplot is already in use (a notebook keeps its own)."""
    import sys

    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> None:
    fig.tight_layout()
    write_whole_bytes(path, fig)
    _pyplot().close(fig)


def _colors(names) -> dict:
    import matplotlib
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(dict.fromkeys(names))}


def _context_axis(ax, seqs) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(s) for s in seqs))
    step = max(1, len(ticks) // 8)
    ax.set_xticks(ticks[::step], [format_tokens(t) for t in ticks[::step]])
    ax.set_xlabel("context length (tokens)")


def _op_points(pred) -> list[tuple]:
    """(op, intensity FLOP/byte, achieved TFLOP/s, seconds) of every op that computes and moves bytes."""
    points = []
    for timed in pred.timing.ops:
        flops, moved, took = (float(np.max(v)) for v in (timed.op.flops, timed.op.hbm_bytes, timed.time_s))
        if flops > 0 and moved > 0 and took > 0:
            points.append((timed.op, flops / moved, flops / took / 1e12, took))
    return points


def roofline_axes(ax, preds, labelled: int = 6) -> None:
    """The hardware's roofline (peak FLOP/s, HBM bandwidth) with every op of every prediction at
    its arithmetic intensity and achieved FLOP/s; marker = op kind, colour = method (op kind when
    there is one method, whose ``labelled`` slowest ops are named)."""
    hw, dtype = preds[0].hw, preds[0].workload.dtype
    peak, bandwidth = hw.compute.peak(dtype), hw.memory.bandwidth_Bps.value
    intensity = np.logspace(-2, 4, 200)
    ax.plot(intensity, np.minimum(peak, bandwidth * intensity) / 1e12, color="black", lw=1.5,
            label=f"roofline: {bandwidth / 1e12:.2f} TB/s, {peak / 1e12:.0f} TFLOP/s {dtype}")
    single = len(preds) == 1
    colors = _colors(KIND_LABELS if single else [p.method.name for p in preds])
    for pred in preds:
        points = _op_points(pred)
        for op, x, y, _ in points:
            ax.scatter(x, y, s=36, alpha=0.8, marker=KIND_MARKERS.get(op.kind, "o"),
                       color=colors[op.kind if single else pred.method.name])
        for op, x, y, _ in sorted(points, key=lambda p: -p[3])[:labelled if single else 0]:
            ax.annotate(op.name.split("/")[-1], (x, y), fontsize=7, xytext=(4, -3), textcoords="offset points")
    kinds = sorted({op.kind for p in preds for op, *_ in _op_points(p)})
    for kind in kinds:
        ax.scatter([], [], marker=KIND_MARKERS.get(kind, "o"), label=KIND_LABELS.get(kind, kind),
                   color=colors[kind] if single else "grey")
    for name in ([] if single else colors):
        ax.scatter([], [], color=colors[name], label=name)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per HBM byte)",
           ylabel="achieved TFLOP/s", title=f"roofline: {hw.name}")
    ax.legend(fontsize=6, loc="lower right", ncol=1 if single else 2)


def breakdown_axes(ax, preds) -> None:
    """One horizontal bar per method, split by op kind: where the step's time goes (ms)."""
    kinds = [k for k in KIND_LABELS if any(t.op.kind == k for p in preds for t in p.timing.ops)]
    colors, left = _colors(kinds), np.zeros(len(preds))
    names = [p.method.name for p in preds]
    for kind in kinds:
        ms = np.array([sum(float(np.max(t.time_s)) for t in p.timing.ops if t.op.kind == kind) * 1e3
                       for p in preds])
        ax.barh(names, ms, left=left, color=colors[kind], label=KIND_LABELS[kind], height=0.6)
        left += ms
    replay = np.array([graph_replay_time(p.hw) if p.engine == "graphs" else 0.0 for p in preds]) * 1e3
    if np.any(replay > 0):  # one CUDA-graph replay's fixed cost (kvsim.roofline)
        ax.barh(names, replay, left=left, color="0.6", label="graph replay", height=0.6)
        left += replay
    for row, total in enumerate(left):
        ax.annotate(f"{total:.3g} ms", (total, row), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set(xlabel="time per decode step (ms)", title="where the time goes")
    ax.set_xlim(right=left.max() * 1.15)
    pad = max(0, 3 - len(preds)) / 2  # keep one or two bars as thin as three would be
    ax.set_ylim(len(preds) - 0.5 + pad, -0.5 - pad)  # first method on top
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)


def context_curves(pred, seqs) -> object | None:
    """The same configuration as ``pred`` predicted over ``seqs``; None where the method cannot
    run at some of those contexts."""
    from .predict import predict

    wl = pred.workload
    try:
        return predict(pred.hw, pred.method, seq=np.asarray(seqs, dtype=float), batch=wl.batch,
                       model=pred.model, dtype=wl.dtype, kv_dtype=wl.kv_dtype, gpus=pred.gpus)
    except KvsimError:
        return None


def line_axes(ax, series, ylabel: str, title: str, capacity=None, legend: bool = True) -> None:
    """``series``: (label, contexts, values, fits, color, linestyle); points that do not fit are
    drawn as crosses. ``capacity``: (label, bytes in the plotted unit)."""
    for label, seqs, values, fits, color, style in series:
        ax.plot(seqs, values, marker=".", color=color, linestyle=style, label=label)
        misses = ~np.asarray(fits, dtype=bool)
        ax.scatter(np.asarray(seqs)[misses], np.asarray(values)[misses], marker="x", color=color, s=40, zorder=3)
    if any(not np.all(entry[3]) for entry in series):
        ax.scatter([], [], marker="x", color="grey", label="does not fit")
    if capacity:
        ax.axhline(capacity[1], **CAPACITY_STYLE, label=capacity[0])
    _context_axis(ax, [x for s in series for x in s[1]])
    ax.set(ylabel=ylabel, title=title)
    ax.set_ylim(bottom=0)
    if legend:
        ax.legend(fontsize=6)


def _curve_series(curves, colors, seqs, quantity, scale) -> list[tuple]:
    return [(name, seqs, np.broadcast_to(getattr(c, quantity), seqs.shape) / scale,
             np.broadcast_to(c.fits, seqs.shape), colors[name], "-") for name, c in curves]


def predict_figure(preds, path, seqs=None) -> None:
    """kvsim predict --plot: roofline, breakdown, latency and memory against context (2 × 2);
    the dotted line marks the predicted context."""
    plt, first = _pyplot(), preds[0]
    seq = int(np.max(first.workload.seq))
    seqs = seqs if seqs is not None else np.unique(np.r_[2.0 ** np.arange(10, np.log2(seq) + 3), seq])
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    roofline_axes(axes[0, 0], preds)
    breakdown_axes(axes[0, 1], preds)
    colors = _colors(p.method.name for p in preds)
    curves = [(p.method.name, c) for p in preds if (c := context_curves(p, seqs)) is not None]
    line_axes(axes[1, 0], _curve_series(curves, colors, seqs, "latency_s", 1e-3),
              "time per decode step (ms)", "latency against context")
    line_axes(axes[1, 1], _curve_series(curves, colors, seqs, "peak_gpu_bytes", GB),
              "GPU memory per GPU (GB)", "memory against context",
              capacity=(f"{first.hw.name} capacity", first.gpu_capacity_bytes / GB))
    for ax in axes[1]:
        ax.axvline(seq, color="grey", linestyle=":", lw=1)
    gpus = f" x{first.gpus}" if first.gpus > 1 else ""
    fig.suptitle(f"{first.model.name} on {first.hw.name}{gpus}, batch {int(np.max(first.workload.batch))}, "
                 f"context {format_tokens(seq)}")
    _save(fig, path)


MAX_PANELS = 6
BATCH_STYLES = ("-", "--", ":", "-.")


def _sweep_series(records, colors, styles) -> list[tuple]:
    """(label, contexts, latency ms, memory GB, fits, colour, style) per method × batch."""
    lines = defaultdict(list)
    for r in records:
        lines[(r["method"], r["batch"])].append((r["seq"], r["latency_s"] * 1e3, r["memory_bytes"] / GB, r["fits"]))
    return [(f"{m}, batch {b}", *map(np.asarray, zip(*sorted(points))), colors[m], styles[b])
            for (m, b), points in lines.items()]


def _sweep_legend(fig, colors, styles, any_miss: bool) -> None:
    """One legend for every panel, right of them: colour = method, line style = batch."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=m) for m, c in colors.items()]
    handles += [Line2D([], [], color="black", linestyle=st, label=f"batch {b}") for b, st in styles.items()]
    handles.append(Line2D([], [], **CAPACITY_STYLE, label="GPU capacity"))
    if any_miss:
        handles.append(Line2D([], [], color="grey", marker="x", linestyle="", label="does not fit"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)


def sweep_figure(records, path, title: str = "") -> None:
    """kvsim sweep --plot: small multiples, one column per hardware × GPU count (up to six),
    latency (top) and memory per GPU (bottom) against context; colour = method, line style =
    batch, crosses = does not fit; one legend beside the panels, the model in the title."""
    plt = _pyplot()
    panels = defaultdict(list)
    for record in records:
        panels[(record["hw"], record["gpus"])].append(record)
    keys = list(panels)[:MAX_PANELS]
    colors = _colors(r["method"] for r in records)
    styles = dict(zip(sorted({r["batch"] for r in records}), BATCH_STYLES * 8))
    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys) + 2.2, 7.5), squeeze=False,
                             sharex="col", layout="constrained")
    for column, (hw, gpus) in enumerate(keys):
        series = _sweep_series(panels[(hw, gpus)], colors, styles)
        name = f"{hw} x{gpus}" if gpus > 1 else hw
        line_axes(axes[0, column], [(lab, s, lat, fit, c, st) for lab, s, lat, _, fit, c, st in series],
                  "time per decode step (ms)" if column == 0 else "", name, legend=False)
        line_axes(axes[1, column], [(lab, s, mem, fit, c, st) for lab, s, _, mem, fit, c, st in series],
                  "GPU memory per GPU (GB)" if column == 0 else "", "", legend=False,
                  capacity=("capacity", panels[(hw, gpus)][0]["gpu_capacity_bytes"] / GB))
        axes[0, column].set_xlabel("")
    _sweep_legend(fig, colors, {b: st for b, st in styles.items() if len(styles) > 1},
                  not all(r["fits"] for r in records))
    shown = "" if len(panels) <= MAX_PANELS else f" (first {MAX_PANELS} of {len(panels)} hardware × GPU counts)"
    fig.suptitle(f"{title or records[0]['model']}: decode step time and GPU memory against context{shown}")
    write_whole_bytes(path, fig)
    plt.close(fig)


METHOD_MARKERS = "osD^vP*Xph<>"


def plan_axes(ax, options, tpot_ms=None, title: str = "", labelled: int = 5) -> None:
    """$ per million output tokens against time per output token for every priced option that
    fits; colour = hardware, marker = method, the GPU count written beside each point; the
    objective as a line and the ``labelled`` cheapest options that meet it named in full.
    ``options`` in plan's ranked order."""
    shown = [o for o in options if o.fits and o.usd_per_mtok]
    if not shown:
        raise KvsimError("nothing to plot: no option both fits and has a price")
    colors = _colors(o.hw for o in shown)
    markers = {m: METHOD_MARKERS[i % len(METHOD_MARKERS)] for i, m in enumerate(dict.fromkeys(o.method for o in shown))}
    for o in shown:
        ax.scatter(o.tpot_s * 1e3, o.usd_per_mtok, color=colors[o.hw], marker=markers[o.method], s=34, alpha=0.8)
        ax.annotate(f"x{o.gpus}", (o.tpot_s * 1e3, o.usd_per_mtok), xytext=(3, 2), textcoords="offset points",
                    fontsize=5.5, color=colors[o.hw])
    for hw, color in colors.items():
        ax.plot([], [], color=color, lw=6, label=hw)
    for method, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=method)
    if tpot_ms:
        ax.axvline(tpot_ms, color="black", linestyle="--", lw=1, label=f"objective {tpot_ms:g} ms")
    ax.set(xscale="log", yscale="log", xlabel="time per output token (ms); xN beside a point: N GPUs",
           ylabel="$ per million output tokens", title=f"cost against latency{': ' + title if title else ''}")
    _label_cheapest(ax, [o for o in shown if o.meets_slo][:labelled])
    _plain_log_ticks(ax)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _label_cheapest(ax, picked) -> None:
    """Name each option, the text on whichever side of the point has more room."""
    low, high = np.log(ax.get_xlim())
    for rank, o in enumerate(picked):
        x = o.tpot_s * 1e3
        left = (np.log(x) - low) / (high - low) < 0.5
        ax.annotate(f"{'cheapest: ' if o.cheapest else ''}{o.hw} x{o.gpus} {o.method} (batch {o.batch})",
                    (x, o.usd_per_mtok), xytext=(10 if left else -10, 10 + 11 * rank), textcoords="offset points",
                    fontsize=7, ha="left" if left else "right", arrowprops=dict(arrowstyle="-", color="grey", lw=0.5))
        if o.cheapest:
            ax.scatter(x, o.usd_per_mtok, s=260, facecolors="none", edgecolors="red", lw=2)


def _plain_log_ticks(ax) -> None:
    """Log axes labelled 5, 10, 20, 50 rather than 5×10⁰, 10¹, 2×10¹."""
    from matplotlib.ticker import FuncFormatter

    def label(value, _):
        lead = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
        return f"{value:g}" if np.isclose(lead, [1, 2, 5]).any() else ""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(label))
        axis.set_minor_formatter(FuncFormatter(label))


def plan_figure(options, tpot_ms, path, title: str = "") -> None:
    """kvsim plan --plot: ``plan_axes`` on its own figure, written to ``path``."""
    fig, ax = _pyplot().subplots(figsize=(11, 6.5))
    try:
        plan_axes(ax, options, tpot_ms, title)
    except KvsimError:
        _pyplot().close(fig)
        raise
    _save(fig, path)
