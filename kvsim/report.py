"""Text tables for people."""
from __future__ import annotations

from .units import format_bytes, format_count, format_seconds, format_tokens


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def prediction_text(pred, top: int = 8) -> str:
    wl, rec = pred.workload, pred
    attn = pred.attention()
    latency = float(rec.latency_s)
    params = pred.method.model_dump(exclude_none=True)
    param_text = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    gpus = f" x{pred.gpus}" if pred.gpus > 1 else ""
    lines = [
        f"{pred.method.name} ({param_text}) on {pred.hw.name}{gpus}: {pred.model.name}, "
        f"batch {int(wl.batch)}, context {format_tokens(int(wl.seq))}, "
        f"weights {wl.dtype}, KV {wl.kv_dtype}",
        "",
        f"  latency per step   {format_seconds(latency)}   ({float(pred.tokens_per_s):.1f} tokens/s)",
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
    if int(wl.seq) > pred.model.max_context:
        lines.append(f"  note: {pred.model.name} was trained for {format_tokens(pred.model.max_context)} tokens")
    return "\n".join(lines) + "\n\n" + breakdown_text(pred, top)


def breakdown_text(pred, top: int = 8) -> str:
    timed = sorted(pred.timing.ops, key=lambda t: -float(t.time_s))[:top]
    total = float(pred.latency_s)
    rows = [[t.op.name, format_seconds(float(t.time_s)), f"{100 * float(t.time_s) / total:.1f}%",
             str(t.bound_names()), format_count(t.op.hbm_bytes, "B"), format_count(t.op.flops, "FLOP")]
            for t in timed]
    return "ops that take the most time:\n" + table(rows, ["op", "time", "share", "bound", "HBM", "FLOPs"])


def comparison_text(preds: list) -> str:
    """--method all: one row per method, sorted by latency."""
    dense = next((p for p in preds if p.method.name == "dense"), preds[0])
    rows = []
    for p in sorted(preds, key=lambda p: float(p.latency_s)):
        attn = p.attention()
        rows.append([p.method.name, format_seconds(float(p.latency_s)),
                     f"{float(dense.latency_s) / float(p.latency_s):.2f}x",
                     format_count(attn["hbm_bytes"], "B"), format_count(p.hbm_bytes, "B"),
                     format_bytes(p.kv_bytes), "yes" if bool(p.fits) else "no"])
    first = preds[0]
    head = (f"{first.hw.name}: {first.model.name}, batch {int(first.workload.batch)}, "
            f"context {format_tokens(int(first.workload.seq))}\n\n")
    return head + table(rows, ["method", "latency", "vs dense", "attn HBM", "step HBM", "KV memory", "fits"])
