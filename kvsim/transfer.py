"""Laws measured on one device, carried to another through the second one's datasheet facts.

A profile that ``inherits`` a measured profile takes every law below that it does not state
itself. Each law is scaled by the physical quantity it depends on, and its source says
``transferred from <profile>`` with the rule:

- Chip-level terms (launch floor, GEMM tile rows, gather efficiency, torch.topk's per-call cost
  and exponents) are properties of the SM design and the software stack: carried as they are.
- Rates set by the SMs (loads the L2 serves again, torch.topk's radix passes, which run far below
  HBM bandwidth) scale with SM count × clock; a single-block select's time per row with 1/clock,
  and its rows in flight are the device's own SM count.
- Efficiency curves (achieved fraction of peak against work per kernel): a kernel of x bytes (or
  FLOPs) takes x / (peak · e_max), its streaming time at the best fraction the curve reaches, plus
  the seconds it loses beyond that (launch ramp, tail wave, memory latency). Those seconds are
  the chip's and carry over; the streaming time scales with the peak. So on a device with r times
  the peak, 1/e'(x) = 1/e_max + r · (1/e(x) − 1/e_max): the best fraction carries over, and a
  small kernel, which loses the same seconds in a shorter streaming time, reaches a smaller one.
  (Shifting the curve along x by r instead is the same law for a loss that does not grow with x;
  the H100's loss grows from 1 µs at 100 kB to 10 µs at 1 GB per kernel.)
- A kernel that does more than the plain kernel it varies (``rope_attention``: the split-K
  decode kernel rotating keys as it loads them) takes the plain kernel's time on the device's
  own ``attention`` curve plus the seconds it took beyond the plain kernel on the parent, scaled
  by SM count × clock: the rotation is SM work, which a faster memory does not shorten. This is
  the lower of the two bounds one device gives: where the parent's loads hid most of the SM work
  (large kernels), a faster memory uncovers it. On the H200 (the H100's SMs and clock, 1.43x its
  bandwidth) the rotating kernel ran 1.05x faster than on the H100 at 67 MB a call and 1.2x at
  1 GB, plain decode 1.45x (h100-sweep.jsonl, h200-sweep.jsonl): this law predicts 1.2x and
  1.4x, carrying the whole H100 time 1.0x and 1.0x; an H200 measurement of its own
  (benchmarks/bench_floor.py) replaces both.
- ``attention_logits`` (the same kernel writing every query head's fp32 logits) loses nothing
  beyond plain decode at small sizes and 6-11% once it nears the bandwidth limit (batch 8-32,
  3k-26k rows: benchmarks/results/h100-floor-logits.jsonl): a memory-system loss, not SM work,
  so its curve carries over by the bandwidth rule.
- The CUDA context and the allocator's reserve are the driver's and the allocator's: carried.

A profile with ``memory.context_bytes`` and ``memory.allocator_reserve_bytes`` and no
``workspace_bytes`` gets their sum as its workspace.
"""
from __future__ import annotations

import copy

import numpy as np

from .errors import KvsimError
from .hardware import SCORE_FAMILIES, kernel_seconds
from .trust import trust_of

AS_IS = "as measured"
# law path -> how it scales ("as measured", "peak", "bandwidth", "sm_rate", "clock", "sm_count")
LAWS = {
    "launch_overhead_s": AS_IS,
    "graph_launch_s": AS_IS,
    "compute.efficiency": "peak",
    "compute.tile_rows": AS_IS,
    "memory.efficiency": "bandwidth",
    "memory.kernel_efficiency.attention": "bandwidth",
    "memory.kernel_efficiency.rope_attention": "beyond_attention",
    "memory.kernel_efficiency.attention_logits": "bandwidth",
    # the score kernels' curves (benchmarks/bench_scores.py): their lost seconds carry over
    **{f"memory.kernel_efficiency.{family}": "bandwidth" for family in SCORE_FAMILIES.values()},
    "memory.gather_efficiency": AS_IS,
    "memory.reread_Bps": "sm_rate",
    "memory.context_bytes": AS_IS,
    "memory.allocator_reserve_bytes": AS_IS,
    "topk.call_s": AS_IS,
    "topk.throughput_Bps": "sm_rate",
    "topk.single_block.call_s": AS_IS,
    "topk.single_block.row_s": "clock",
    "topk.single_block.size_exponent": AS_IS,
    "topk.single_block.rows_exponent": AS_IS,
    "topk.single_block.wave_rows_exponent": AS_IS,
    "topk.single_block.concurrent_rows": "sm_count",
}
RULES = {
    AS_IS: "as measured",
    "peak": "the seconds a kernel loses beyond the peak rate carried over, peak ratio {ratio:.3g}",
    "bandwidth": "the seconds a kernel loses beyond the peak rate carried over, bandwidth ratio {ratio:.3g}",
    "sm_rate": "scaled by SM count x clock, ratio {ratio:.3g}",
    "clock": "scaled by the inverse clock ratio {ratio:.3g}",
    "beyond_attention": "the plain kernel on this device's attention curve plus the seconds beyond "
                        "it on the parent, scaled by SM count x clock, ratio {ratio:.3g}",
}
PLAIN_CURVE = "memory.kernel_efficiency.attention"


def _get(data: dict, path: str):
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _set(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def _fact(data: dict, path: str, name: str) -> float:
    value = _get(data, path)
    if not isinstance(value, dict) or "value" not in value:
        raise KvsimError(f"profile {data.get('name')}: inheriting laws needs {path} ({name}) with a source")
    return float(value["value"])


def _peak(data: dict) -> float:
    flops = _get(data, "compute.peak_flops") or {}
    for dtype in ("bf16", "fp16", "fp32"):
        if dtype in flops:
            return float(flops[dtype]["value"])
    raise KvsimError(f"profile {data.get('name')}: no peak FLOP/s to scale the GEMM efficiency by")


def ratios(child: dict, parent: dict) -> dict:
    """The child's datasheet facts over the parent's, for each scaling rule."""
    rate = lambda d: _fact(d, "compute.sm_count", "SM count") * _fact(d, "compute.clock_hz", "clock")  # noqa: E731
    return {AS_IS: 1.0, "peak": _peak(child) / _peak(parent),
            "bandwidth": _fact(child, "memory.bandwidth_Bps", "bandwidth") / _fact(parent, "memory.bandwidth_Bps", "bandwidth"),
            "sm_rate": rate(child) / rate(parent), "beyond_attention": rate(child) / rate(parent),
            "clock": _fact(parent, "compute.clock_hz", "clock") / _fact(child, "compute.clock_hz", "clock")}


def lost_time_points(points, ratio: float) -> list:
    """An efficiency curve on a device with ``ratio`` times the peak: a kernel of x bytes takes
    x / (peak · e_max) plus the time it loses beyond that, and the lost seconds carry over
    (launch ramp, tail wave, DRAM latency: the chip's, not the peak's), so
    1/e'(x) = 1/e_max + ratio · (1/e(x) − 1/e_max); a bigger kernel never takes less time
    (a parent's flat, L2-resident stretch would otherwise fall on a faster device)."""
    sizes, effs = (np.asarray(v, dtype=float) for v in zip(*points))
    e_max = effs.max()
    moved = 1.0 / (1.0 / e_max + ratio * (1.0 / effs - 1.0 / e_max))
    times = np.maximum.accumulate(sizes / moved)  # seconds x peak
    return [[float(size), float(size / t)] for size, t in zip(sizes, times)]


def beyond_plain_points(points, parent_plain, child_plain, peaks: tuple[float, float], sm_ratio: float) -> list:
    """A variant kernel's curve on the child: at each measured size x, the plain kernel's time on
    the child's curve plus what the variant took beyond the plain kernel on the parent (SM work)
    over ``sm_ratio`` (the child's SM count × clock over the parent's). ``peaks``: (parent,
    child) bandwidth."""
    sizes, effs = (np.asarray(v, dtype=float) for v in zip(*points))
    extra = np.maximum(sizes / (peaks[0] * effs) - kernel_seconds(parent_plain, peaks[0], sizes), 0.0)
    seconds = kernel_seconds(child_plain, peaks[1], sizes) + extra / sm_ratio
    return [[float(x), float(min(x / (peaks[1] * t), 1.0))] for x, t in zip(sizes, seconds)]


def _carried(value: dict, rule: str, ratio: float, child: dict, parent: dict) -> dict:
    parent_name = parent["name"]
    if rule == "beyond_attention":
        plain = (_get(parent, PLAIN_CURVE) or {}).get("points"), (_get(child, PLAIN_CURVE) or {}).get("points")
        if None in plain:  # no plain curve on one side: the variant's own lost time carries over
            rule, ratio = "bandwidth", ratios(child, parent)["bandwidth"]
        else:
            peaks = (_fact(parent, "memory.bandwidth_Bps", "bandwidth"), _fact(child, "memory.bandwidth_Bps", "bandwidth"))
            how = f"from {parent_name} ({RULES[rule].format(ratio=ratio)}): {value['source']}"
            return {"points": beyond_plain_points(value["points"], *plain, peaks, ratio), "source": f"transferred {how}"}
    if rule == "sm_count":
        sms = _get(child, "compute.sm_count")
        return {"value": sms["value"], "source": f"{sms['source']} (one row's block per SM at a time)"}
    how = f"from {parent_name} ({RULES[rule].format(ratio=ratio)}): {value['source']}"
    note = f"transferred {how}" if trust_of(value["source"]) in ("measured", "transferred") else f"assumed, {how}"
    if "points" in value:
        return {"points": lost_time_points(value["points"], ratio), "source": note}
    return {"value": float(value["value"]) * ratio, "source": note}


def transfer(child: dict, parent: dict) -> dict:
    """``child`` with every law it lacks taken from ``parent`` (resolved), scaled; returns a copy."""
    out = copy.deepcopy(child)
    scale = None
    for path, rule in LAWS.items():
        value = _get(parent, path)
        if value is None or _get(child, path) is not None:
            continue
        scale = scale or ratios(child, parent)
        _set(out, path, _carried(value, rule, scale.get(rule, 1.0), out, parent))
    if scale is not None:
        out["transferred_from"] = {"profile": parent["name"], "architecture": parent.get("architecture")}
    return out


def _workspace(data: dict) -> None:
    """Workspace = CUDA context + allocator reserve, where the profile gives both and no total."""
    context, reserve = _get(data, "memory.context_bytes"), _get(data, "memory.allocator_reserve_bytes")
    if "workspace_bytes" in data or context is None or reserve is None:
        return
    levels = {trust_of(s["source"]) for s in (context, reserve)}
    word = next(w for w in ("assumed", "transferred", "measured", "datasheet") if w in levels or w == "datasheet")
    data["workspace_bytes"] = {"value": float(context["value"]) + float(reserve["value"]),
                               "source": f"{word}: memory.context_bytes + memory.allocator_reserve_bytes"}


def resolve(data: dict, parent: dict | None) -> dict:
    """A profile's mapping ready to validate: inherited laws filled in, workspace summed."""
    out = transfer(data, parent) if parent is not None else copy.deepcopy(data)
    _workspace(out)
    return out


def without_laws(data: dict) -> dict:
    """A copy of a profile mapping with its own laws removed (to predict it from another
    device's laws alone: leave-one-device-out)."""
    out = copy.deepcopy(data)
    for path in LAWS:
        *parents, last = path.split(".")
        holder = _get(out, ".".join(parents)) if parents else out
        if isinstance(holder, dict):
            holder.pop(last, None)
    topk = out.get("topk") or {}
    if "single_block" in topk and not topk["single_block"]:
        topk.pop("single_block")
    if "topk" in out and not topk:
        out.pop("topk")
    out.pop("transferred_from", None)
    return out
