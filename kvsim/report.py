"""Text tables for people."""
from __future__ import annotations

import numpy as np

from .units import format_bytes, format_count, format_ratio, format_seconds, format_tokens

UNITS_NOTE = "bytes in SI units (1 GB = 10^9 bytes)"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def with_interval(pred) -> str:
    """``12.9 ms (12.5–13.3)``: the step latency and its 90% interval (kvsim.intervals)."""
    texts = [format_seconds(float(np.max(x))) for x in (pred.latency_s, *pred.latency_interval)]
    units = {text.rsplit(" ", 1)[-1] for text in texts}
    low, high = (t.rsplit(" ", 1)[0] if len(units) == 1 else t for t in texts[1:])
    return f"{texts[0]} ({low}–{high})"


def prediction_text(pred, top: int = 8, quality=None) -> str:
    wl, rec = pred.workload, pred
    attn = pred.attention()
    latency = float(rec.latency_s)
    params = pred.method.model_dump(exclude_none=True)
    param_text = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    gpus = f" x{pred.gpus} (FLOPs, bytes and memory per GPU)" if pred.gpus > 1 else ""
    lines = [
        f"{pred.method.name} ({param_text}) on {pred.hw.name}{gpus}: {pred.model.name}, "
        f"batch {int(wl.batch)}, context {format_tokens(int(wl.seq))}, "
        f"weights {wl.dtype}, KV {wl.kv_dtype}, engine {pred.engine}; {UNITS_NOTE}",
        "",
        f"  latency per step   {with_interval(pred)}   ({float(pred.tokens_per_s):.1f} tokens/s)",
        f"  FLOPs per step     {format_count(pred.flops, 'FLOP')}",
        f"  HBM bytes          {format_count(pred.hbm_bytes, 'B')}",
        f"  PCIe bytes         {format_count(pred.pcie_bytes, 'B')}",
        f"  attention          {format_seconds(float(attn['latency_s']))} "
        f"({100 * float(attn['latency_s']) / latency:.0f}% of the step), "
        f"{format_count(attn['hbm_bytes'], 'B')} HBM, {format_count(attn['flops'], 'FLOP')}",
        f"  KV cache           {format_bytes(pred.kv_bytes)}",
        f"  GPU memory         {format_bytes(pred.peak_gpu_bytes)} needed of "
        f"{format_bytes(pred.gpu_capacity_bytes)}: {'fits' if bool(pred.fits) else 'DOES NOT FIT'}",
    ]
    if float(pred.host_memory_bytes) > 0:
        lines.append(f"  host memory        {format_bytes(pred.host_memory_bytes)} of "
                     f"{format_bytes(pred.host_capacity_bytes)}")
    if pred.generation is not None:
        gen = pred.generation
        lines += [f"  generation         {wl.gen} tokens after a {format_tokens(int(wl.seq))} prompt: "
                  f"TTFT {format_seconds(float(gen.ttft_s))}, total {format_seconds(float(gen.total_s))}, "
                  f"{float(gen.tokens_per_s):.1f} tokens/s"]
    if quality is not None:
        lines.append(f"  quality            {quality.line()}")
    if _trained_note(pred):
        lines.append(f"  {_trained_note(pred)}")
    return "\n".join(lines) + "\n\n" + breakdown_text(pred, top)


def breakdown_text(pred, top: int = 8) -> str:
    timed = sorted(pred.timing.ops, key=lambda t: -float(t.time_s))[:top]
    total = float(pred.latency_s)
    rows = [[t.op.name, format_seconds(float(t.time_s)), f"{100 * float(t.time_s) / total:.1f}%",
             str(t.bound_names()), format_count(t.op.hbm_bytes, "B"), format_count(t.op.flops, "FLOP")]
            for t in timed]
    return "ops that take the most time:\n" + table(rows, ["op", "time", "share", "bound", "HBM", "FLOPs"])


def comparison_text(preds: list, quality: list | None = None) -> str:
    """--method all: one row per method, sorted by latency; with ``quality`` (one per
    prediction, kvsim.quality) a column of published quality relative to dense."""
    dense = next((p for p in preds if p.method.name == "dense"), preds[0])
    found = dict(zip((id(p) for p in preds), quality or []))
    rows = []
    for p in sorted(preds, key=lambda p: float(p.latency_s)):
        attn = p.attention()
        rows.append([p.method.name, with_interval(p),
                     format_ratio(float(dense.latency_s) / float(p.latency_s)),
                     format_count(attn["hbm_bytes"], "B"), format_count(p.hbm_bytes, "B"),
                     format_bytes(p.kv_bytes), "yes" if bool(p.fits) else "no"]
                    + ([found[id(p)].cell()] if quality else []))
    first = preds[0]
    gpus = f" x{first.gpus} (bytes per GPU)" if first.gpus > 1 else ""
    head = (f"{first.hw.name}{gpus}: {first.model.name}, batch {int(first.workload.batch)}, "
            f"context {format_tokens(int(first.workload.seq))}, engine {first.engine}; {UNITS_NOTE}\n\n")
    header = ["method", "latency", "vs dense", "attn HBM", "step HBM", "KV memory", "fits"]
    text = head + table(rows, header + ([f"quality ({quality[0].benchmark})"] if quality else []))
    note = _trained_note(first)
    return text + (QUALITY_NOTE if quality else "") + (f"\n{note}" if note else "")


QUALITY_NOTE = ("\nquality: published score relative to dense on that benchmark for this model, context and "
                "budget (kvsim/methods/*/quality.yaml); 'exact': the whole context is kept; 'unknown': no "
                "close published setting (--method NAME shows the nearest)")


def _trained_note(pred) -> str:
    if int(np.max(pred.workload.seq)) <= pred.model.max_context:
        return ""
    return (f"note: {pred.model.name} was trained for {format_tokens(pred.model.max_context)} tokens; "
            f"context {format_tokens(int(np.max(pred.workload.seq)))} is beyond it")
