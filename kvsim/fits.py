"""Fits of microbenchmark records to profile fields: what the benchmark scripts write into a
profile, and what the tests re-derive from the committed measurements."""
from __future__ import annotations

import numpy as np


def reread_fit(records) -> dict:
    """memory.reread_Bps: the median rate at which G programs of a KV head load its rows again
    (benchmarks/bench_reread.py records: loaded bytes over per-head time)."""
    rates = np.array([r["loaded_bytes"] / r["per_head_s"] for r in records])
    return {"reread_Bps": float(np.median(rates)), "min": float(rates.min()), "max": float(rates.max()),
            "shapes": len(rates)}


def topk_single_block_fit(records, sms: int, data: str = "randn") -> dict:
    """Least squares in log space of call_s + row_s·(n/1024)^a·⌈rows/sms⌉^b·min(rows, sms)^c to
    the unsorted single-block times on ``data`` rows (records without ``data`` are randn's;
    kvsim.topk_law.SingleBlockTopK); returns the fields and the errors."""
    from scipy.optimize import least_squares
    picked = [r for r in records if r.get("path") == "single-block" and r.get("data", "randn") == data]
    if len(picked) < 6:
        raise ValueError(f"{len(picked)} single-block records on {data} rows: too few for the law's 5 terms")
    rows = np.array([r["rows"] for r in picked], float)
    n = np.array([r["n"] for r in picked], float) / 1024.0
    waves, in_wave = np.ceil(rows / sms), np.minimum(rows, sms)
    t = np.array([r["torch_unsorted_us"] for r in picked]) * 1e-6
    law = lambda p: p[0] + p[1] * n ** p[2] * waves ** p[3] * in_wave ** p[4]  # noqa: E731
    p = least_squares(lambda p: np.log(law(p) / t), x0=[5e-6, 7e-6, 0.8, 0.9, 0.05], bounds=(0, np.inf)).x
    err = np.abs(law(p) / t - 1)
    return {"call_s": p[0], "row_s": p[1], "size_exponent": p[2], "rows_exponent": p[3],
            "wave_rows_exponent": p[4], "concurrent_rows": sms, "data": data, "shapes": len(picked),
            "median_err": float(np.median(err)), "max_err": float(err.max())}


def allreduce_fit(sent: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """All-reduce microbenchmark (benchmarks/bench_allreduce.py): (latency_s, effective_Bps) of seconds = latency + sent / effective, least squares of the
    relative error (each size weighs the same, as the 10% target reads)."""
    design = np.stack([np.ones_like(sent), sent], 1) / seconds[:, None]
    (latency, per_byte), *_ = np.linalg.lstsq(design, np.ones_like(seconds), rcond=None)
    return float(latency), float(1.0 / per_byte) if per_byte > 0 else float("inf")


def allreduce_profile_time(hw, nbytes: int, gpus: int) -> float:
    """kvsim's time for one all-reduce of ``nbytes`` (kvsim.decoder.allreduce, roofline op time)."""
    from .decoder import allreduce
    from .roofline import op_time
    return float(op_time(allreduce("allreduce", float(nbytes), gpus), hw).time_s)


def kernel_curve_fit(sizes, seconds, bandwidth_Bps: float, l2_resident: bool = False) -> list:
    """A kernel family's memory curve (``memory.kernel_efficiency``): bytes over seconds over
    ``bandwidth_Bps`` per measured kernel, the median over sizes equal within 5%, never falling
    with size (a bigger kernel is never slower per byte), at most 1. ``l2_resident``: the inputs
    of the smaller kernels sat in the L2 (as in a step, where the kernel before wrote them), so
    a bigger kernel may be slower per byte; only its time never falls with size.
    -> [[bytes, efficiency], ...]"""
    measured = sorted(zip(np.asarray(sizes, dtype=float), np.asarray(sizes, dtype=float)
                          / np.asarray(seconds, dtype=float) / bandwidth_Bps))
    groups: list = []
    for size, eff in measured:
        if groups and size <= groups[-1][0][0] * 1.05:
            groups[-1].append((size, eff))
        else:
            groups.append([(size, eff)])
    sizes = np.array([float(np.median([s for s, _ in g])) for g in groups])
    effs = np.minimum([float(np.median([e for _, e in g])) for g in groups], 1.0)
    if l2_resident:
        times = np.maximum.accumulate(sizes / effs)  # seconds x bandwidth, never falling
        effs = sizes / times
    else:
        effs = np.maximum.accumulate(effs)
    return [[float(s), float(e)] for s, e in zip(sizes, effs)]


def rounded_curve(points, decimals: int = 4) -> list:
    """``points`` [[bytes, efficiency]] for a profile line: sizes to 4 significant digits,
    efficiencies to ``decimals`` places, each rounded down where rounding to nearest would make a
    kernel's time fall from the previous point's (flat L2-resident stretches)."""
    out, scale = [], 10 ** decimals
    for size, eff in points:
        size = float(f"{size:.4g}")
        eff = round(eff, decimals)
        if out and size / eff < out[-1][0] / out[-1][1]:
            eff = np.floor(size / (out[-1][0] / out[-1][1]) * scale) / scale
        out.append([size, float(eff)])
    return out


def split_kernel_seconds(seconds, batch, kv_heads, rows, combine_s: float, target_programs: int):
    """A split-K decode call's time less its combine kernel (``combine_s``, one launch floor: its
    partials are a few hundred kB) where the split policy (``target_programs``) splits the rows."""
    from .kernel_contract import split_count
    split = split_count(np.asarray(batch, dtype=float), np.asarray(kv_heads, dtype=float), rows, target_programs) > 1
    return np.asarray(seconds, dtype=float) - combine_s * split


ROPE_POSITION_BYTES, ROPE_TABLE_ELEMENT_BYTES = 4.0, 2.0  # int32 slot position; bf16 cos/sin


def rope_curve_fit(records, hw) -> list:
    """memory.kernel_efficiency.rope_attention from benchmarks/bench_floor.py's ``rope_load``
    rows (``variant_curve_fit``). The bytes are those kvsim's op counts
    (kvsim/methods/streamingllm/cost.py): K/V, q and o, and each row's slot position and cos/sin
    row (``rows · (4 + d · 2)``)."""
    rope = [r for r in records if r.get("kind") == "rope_load"]
    tables = [r["rows"] * (ROPE_POSITION_BYTES + r["head_dim"] * ROPE_TABLE_ELEMENT_BYTES) for r in rope]
    return variant_curve_fit(rope, "rope_s", tables, hw)


def logits_curve_fit(records, hw) -> list:
    """memory.kernel_efficiency.attention_logits from benchmarks/bench_floor.py's ``logits_load``
    rows (``variant_curve_fit``): the split-K kernel that also writes every query head's fp32
    logits (H2O's and ALISA's attention, TidalDecode's selection layers), at the bytes
    kvsim/methods/attention.py ``decode_attention(logits=True)`` counts: K/V, q and o, and
    ``B · H · rows · 4`` of logits."""
    from .kernel_contract import SCORE_BYTES
    rows = [r for r in records if r.get("kind") == "logits_load"]
    logits = [r["batch"] * r["query_heads"] * r["rows"] * SCORE_BYTES for r in rows]  # fp32 logits
    return variant_curve_fit(rows, "logits_s", logits, hw)


def variant_curve_fit(rows, variant_key: str, extra_bytes, hw) -> list:
    """A variant of the split-K decode kernel's own curve: the plain kernel's time on ``hw``'s
    ``attention`` curve at the plain bytes (``rows``' ``bytes``), plus what the variant costs
    beyond it, ``rows[variant_key] − plain_s``, at the plain bytes plus ``extra_bytes``. Both
    kernels were timed alike, each alone in a graph replayed after an L2 flush: the replay's
    fixed cost, the combine kernel and the flush's dirty lines written back are in both and
    cancel, where the absolute times would charge them to every layer's kernel (the plain kernel
    alone runs 10-30% over the attention curve there)."""
    from .cost import Op
    from .roofline import op_time
    moved = np.array([r["bytes"] for r in rows], dtype=float)
    plain = op_time(Op("plain", "attention", hbm_read=moved, launches=1.0, curve="attention"), hw).floors["memory"]
    extra = np.array([r[variant_key] - r["plain_s"] for r in rows], dtype=float)
    return kernel_curve_fit(moved + np.asarray(extra_bytes, dtype=float), plain + np.maximum(extra, 0.0),
                            hw.memory.bandwidth_Bps.value)


def gather_efficiency_fit(records, points, bandwidth_Bps: float) -> dict:
    """memory.gather_efficiency: the median over bench_kernels.py's ``gathered/...`` kernels of
    the time the dense kernel's curve ``points`` gives for the same bytes over the gathered
    kernel's measured time. The roofline multiplies the curve at an op's size by it, so the
    ratio is taken at equal sizes (a ratio against dense at 128k would count the small kernels'
    ramp twice)."""
    from .hardware import kernel_seconds
    gathered = [r for r in records if str(r.get("kernel", "")).startswith("gathered/")]
    if not gathered:
        raise ValueError("no gathered/... kernel records to fit the gather efficiency to")
    nbytes, seconds = (np.array([r[k] for r in gathered], dtype=float) for k in ("bytes", "ours_ms"))
    ratios = kernel_seconds(points, bandwidth_Bps, nbytes) / (seconds * 1e-3)
    return {"gather_efficiency": float(np.median(ratios)), "min": float(ratios.min()),
            "max": float(ratios.max()), "kernels": len(ratios)}


def attention_curve_fit(records, bandwidth_Bps: float, combine_s: float, target_programs: int) -> list:
    """memory.kernel_efficiency.attention from benchmarks/bench_kernels.py's ``kernel: dense``
    rows (32 query and 8 KV heads, CUDA-graph replays, cold L2), each call less its combine."""
    dense = [r for r in records if r.get("kernel") == "dense"]
    seconds = split_kernel_seconds([r["ours_ms"] * 1e-3 for r in dense], [r["batch"] for r in dense], 8,
                                   [r["seq"] for r in dense], combine_s, target_programs)
    return kernel_curve_fit([r["bytes"] for r in dense], seconds, bandwidth_Bps)
