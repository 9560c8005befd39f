"""The schedule over the generation: GPU and CPU KV bytes and step time, phases shaded."""
from __future__ import annotations

from .report import per_step, phase_steps
from .run import ScheduleResult

SHADES = {"I": "#e8f1fb", "II": "#fdf0dc", "III": "#f9e0e0"}


def _draw(result: ScheduleResult, figure) -> None:
    data, spans = per_step(result), phase_steps(result)
    kv_axis, time_axis = figure.subplots(2, 1, sharex=True)
    kv_axis.plot(data["step"], data["gpu_kv"] / 1e9, label="KV on GPU (+ kept x, metadata)")
    kv_axis.plot(data["step"], data["cpu_kv"] / 1e9, label="KV on CPU (+ kept x)")
    kv_axis.set_ylabel("GB")
    time_axis.plot(data["step"][1:], data["step_s"][1:] * 1e3, color="black", label="decode step")
    time_axis.set_ylabel("ms per step")
    time_axis.set_xlabel("generation step (0 = prefill)")
    for axis in (kv_axis, time_axis):
        for name, span in spans.items():
            if span:
                axis.axvspan(span[0] - 0.5, span[1] + 0.5, color=SHADES[name], zorder=0,
                             label=f"Phase {name}" if axis is kv_axis else None)
        axis.grid(alpha=0.3)
    kv_axis.legend(fontsize=7, loc="upper left")
    inp, plan = result.inputs, result.best.placement(0)
    kv_axis.set_title(f"{inp.method.name} on {inp.hw.name}: {inp.model.name}, batch {inp.batch}; "
                      f"alpha={plan.alpha:.2f} beta={plan.beta:.2f}, {result.throughput:.0f} tok/s", fontsize=8)


def write_plot(result: ScheduleResult, path: str) -> None:
    """Render, then write ``path`` whole or not at all (kvsim.outfile)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..outfile import write_figure

    figure = Figure(figsize=(8, 6), dpi=110)
    _draw(result, figure)
    write_figure(path, figure, dpi=110)
