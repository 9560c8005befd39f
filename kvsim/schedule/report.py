"""A schedule for people (a table) and for programs (a JSON-ready dict)."""
from __future__ import annotations

import numpy as np

from ..report import table
from ..units import format_bytes, format_seconds
from .run import ScheduleResult

OVERLAP = {True: "selected rows are prefetched on a copy stream while the previous layer computes "
                 "(selection known before the step); weight stream and offloads overlap compute",
           False: "selected rows wait for the step's own selection (serialized with compute); "
                  "weight stream and offloads overlap compute"}


def phase_steps(result: ScheduleResult) -> dict:
    """First and last decode step of each phase (None: the phase is empty). Step 0 is prefill;
    with p1 = 0 the prompt's K/V is already offloaded after prefill."""
    plan, G = result.best.placement(0), result.inputs.gen
    end_two = min(plan.p2, G + 1) - 1
    spans = {"I": (1, min(plan.p1, plan.p2) - 1),
             "II": (max(plan.p1, 1), end_two) if plan.alpha > 0 else (1, 0),
             "III": (max(plan.p2, 1), G) if plan.beta > 0 else (1, 0)}
    return {name: ([int(a), int(b)] if a <= b else None) for name, (a, b) in spans.items()}


def phase_times(result: ScheduleResult) -> dict:
    step = result.best.step_s[0]
    times = {"prefill": float(step[0])}
    for name, span in phase_steps(result).items():
        times[name] = float(step[span[0]:span[1] + 1].sum()) if span else 0.0
    return times


def _baseline_dict(baseline) -> dict:
    total = baseline.total_s if np.isfinite(baseline.total_s) else None  # None: the policy cannot run
    out = {"throughput_tok_s": baseline.throughput_tok_s, "total_s": total}
    out.update({k: v for k, v in baseline.details.items() if k != "step_s"})
    if baseline.note:
        out["note"] = baseline.note
    return out


def to_dict(result: ScheduleResult) -> dict:
    inp, best, plan = result.inputs, result.best, result.best.placement(0)
    speedup = {f"over_{name}": (result.throughput / b.throughput_tok_s if b.throughput_tok_s > 0 else None)
               for name, b in result.baselines.items()}
    return {
        "hw": inp.hw.name, "model": inp.model.name, "method": inp.method.name,
        "params": inp.method.model_dump(), "batch": inp.batch, "prompt": inp.prompt, "gen": inp.gen,
        "dtype": inp.wl.dtype, "kv_dtype": inp.wl.kv_dtype,
        "phases": {"p1": plan.p1, "p2": plan.p2, "alpha": plan.alpha, "beta": plan.beta,
                   "never": inp.gen + 1, "steps": phase_steps(result), "time_s": phase_times(result)},
        "weights_gpu_fraction": plan.weights_gpu,
        "throughput_tok_s": result.throughput, "total_s": float(best.total_s[0]),
        "peak_gpu_bytes": float(best.gpu_bytes.max()), "gpu_capacity_bytes": inp.gpu_capacity,
        "peak_cpu_bytes": float(best.cpu_bytes.max()), "cpu_capacity_bytes": inp.cpu_capacity,
        "pcie_h2d_bytes": float(best.h2d.sum()), "pcie_d2h_bytes": float(best.d2h.sum()),
        "recomputed_rows": float((inp.batch * best.recompute_rows[0]).sum()),
        "overlap": OVERLAP[inp.prefetchable],
        "baselines": {name: _baseline_dict(b) for name, b in result.baselines.items()},
        "speedup": speedup,
        "search": {"candidates": result.candidates, "seconds": result.search_s,
                   "batches": {str(b): t for b, t in result.batches.items()}},
    }


def _phase_line(name, span, seconds) -> list:
    return [name, f"{span[0]}-{span[1]}" if span else "-", format_seconds(seconds) if span or name == "prefill" else "-"]


def text(result: ScheduleResult) -> str:
    d = to_dict(result)
    ph = d["phases"]
    never = lambda p: "never" if p == ph["never"] else str(p)  # noqa: E731
    head = (f"{d['method']} on {d['hw']}: {d['model']}, batch {d['batch']}, prompt {d['prompt']}, "
            f"{d['gen']} generated, weights {d['dtype']}, KV {d['kv_dtype']}\n\n"
            f"  p1 = {never(ph['p1'])}  (Phase II: alpha = {ph['alpha']:.3f} of new KV to CPU)\n"
            f"  p2 = {never(ph['p2'])}  (Phase III: beta = {ph['beta']:.3f} oldest deleted, recomputed)\n"
            f"  weights on GPU     {100 * d['weights_gpu_fraction']:.1f}%\n"
            f"  throughput         {d['throughput_tok_s']:.1f} tokens/s  (total {format_seconds(d['total_s'])})\n"
            f"  peak GPU memory    {format_bytes(d['peak_gpu_bytes'])} of {format_bytes(d['gpu_capacity_bytes'])}\n"
            f"  peak CPU memory    {format_bytes(d['peak_cpu_bytes'])} of {format_bytes(d['cpu_capacity_bytes'])}\n"
            f"  PCIe               {format_bytes(d['pcie_h2d_bytes'])} to GPU, {format_bytes(d['pcie_d2h_bytes'])} to CPU\n"
            f"  overlap            {d['overlap']}\n\n")
    rows = [_phase_line("prefill", [0, 0], ph["time_s"]["prefill"])]
    rows += [_phase_line(f"Phase {n}", ph["steps"][n], ph["time_s"][n]) for n in ("I", "II", "III")]
    phases = table(rows, ["phase", "steps", "time"])
    base = [[name, f"{b['throughput_tok_s']:.1f}",
             f"{d['speedup'][f'over_{name}']:.2f}x" if d["speedup"][f"over_{name}"] else "n/a",
             b.get("note") or _baseline_policy(name, b)] for name, b in d["baselines"].items()]
    baselines = "\n\nbaselines (dense attention, 16-bit KV, same batch):\n" + table(
        base, ["policy", "tokens/s", "speedup", "how"]) if base else ""
    return head + phases + baselines


def _baseline_policy(name: str, b: dict) -> str:
    if name == "flexgen":
        return (f"weights {100 * b['weights_gpu']:.0f}% / KV {100 * b['kv_gpu']:.0f}% on GPU, "
                f"attention over CPU KV: {b['attention']}")
    return f"{b['concurrent']} sequences at a time, {b['waves']} wave(s)"


def per_step(result: ScheduleResult) -> dict:
    """Arrays for the plot: GPU/CPU KV bytes and step time at steps 0..G."""
    best = result.best
    return {"step": np.arange(result.inputs.steps), "gpu_kv": best.gpu_kv[0], "cpu_kv": best.cpu_kv[0],
            "step_s": best.step_s[0]}
