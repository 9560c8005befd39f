"""Cost + hardware -> time per op and per step.

Per op (all arrays): the compute time (FLOPs over peak × efficiency at the FLOPs per kernel; a
matrix product's rows padded to whole tiles where the profile measured the tile),
the memory time (bytes over bandwidth × efficiency at the bytes per kernel, on the op's
kernel family's own measured curve where the profile has one, × the profile's
gather efficiency for rows read one by one through an index list; at least the bytes the
programs load, repeats included, over the measured re-read rate, where the op says so; an offloaded
block joined with its ring rows at the profile's ``host_link.assemble_efficiency``), the host-link time
per direction, the interconnect time (a ring collective on the node's topology, kvsim.topology),
the launch floor (kernels × launch overhead), and for ops
that stand for torch.topk's radix selects (multi-block: about 20 kernels a call; single-block:
one thread block per row, ~18 passes over it) the profile's measured cost of such calls, where
it has one. The op takes the largest; its ``bound`` names
which. Ops on the "compute" stream run one after another;
"copy" ops run beside them: on graphs as the offloaded runtime pipelines them
(kvsim.offload.pipelined_step), on the eager engine the step takes the longer of the two streams.

Engines: "graphs" (a CUDA-graph replay) runs the kernels back to back: the step is the sum of
the op times and one replay's fixed cost (``graph_replay_time``). "eager" issues every op from the host, as plain PyTorch does: each op costs the
host its calls (``Op.host_calls``, each kind at the profile's ``host.launch_s``) and syncs
(``host.sync_s``), and the GPU runs an op once it is issued and the op before it is done. The
host runs ahead of the GPU, so op j finishes at max over i ≤ j of (host time to issue ops
1..i) + (GPU time of ops i..j): the step is the GPU's time where it is the bottleneck, the
host's where that is. Every issued call also costs the runtime's own Python around it
(``host.python_s``: per torch call, per Triton launch's wrapper; apart from the bare calls). Ops
named ``layers/...`` run in every layer (their totals spread evenly
over ``layers``), in their order within a layer; ops outside the layers run before them (those
listed before the first layer op, and a method's per-step attention and cache work) or after.
A sync makes the host wait for the GPU: after an op that syncs in every layer both streams are
level (the layer's parts between syncs add up); a sync in only some layers costs host time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cost import Cost, Op
from .errors import KvsimError
from .hardware import HardwareProfile, kernel_seconds
from .host_costs import host_issue_time
from .offload import pipelined_step
from .topology import collective_time

BOUNDS = ("compute", "memory", "link", "interconnect", "host", "latency", "library")
ENGINES = ("graphs", "eager")
# ops outside the layers of these kinds run when the step begins (a method's per-step selection
# or cache upkeep), the others after the last layer (final norm, LM head)
STEP_START_KINDS = ("attention", "cache")


@dataclass(frozen=True)
class OpTime:
    op: Op
    time_s: np.ndarray
    bound: np.ndarray  # index into BOUNDS, same shape as time_s
    floors: dict  # name -> seconds, for the laws the tests check

    def bound_names(self) -> np.ndarray:
        return np.asarray(BOUNDS)[self.bound]


def _per_kernel(total, launches):
    return np.asarray(total, dtype=float) / np.maximum(np.asarray(launches, dtype=float), 1.0)


def _compute_time(op: Op, hw: HardwareProfile):
    flops = np.asarray(op.flops, dtype=float) * _tile_padding(op, hw)
    eff = hw.compute.efficiency.at(_per_kernel(flops, op.launches))
    return flops / (hw.compute.peak(op.dtype) * eff)


SIMT_DTYPES = ("fp32", "fp64")  # no tensor-core tiles: cuBLAS runs these on the CUDA cores


def _tile_padding(op: Op, hw: HardwareProfile):
    """A tensor-core matrix product's rows (tokens) run in whole tiles: ⌈M/tile⌉·tile / M times
    its FLOPs. A single row is a matrix-vector product (cuBLAS runs a GEMV kernel, no tiles), and
    fp32/fp64 products run without tensor cores: neither is padded."""
    rows = np.asarray(op.gemm_rows, dtype=float)
    if hw.compute.tile_rows is None or op.dtype in SIMT_DTYPES or not np.any(rows > 1):
        return 1.0
    tile = hw.compute.tile_rows.value
    return np.where(rows > 1, np.ceil(rows / tile) * tile / np.maximum(rows, 1.0), 1.0)


def _over(amount, rate):
    """amount / rate, and 0 where nothing moves (never 0/0 when a rate is 0)."""
    amount = np.asarray(amount, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(amount > 0, amount / rate, 0.0)


# a kernel family without a curve of its own is timed as the one it varies
CURVE_FALLBACK = {"rope_attention": "attention", "attention_logits": "attention"}


def _kernel_curve(op: Op, hw: HardwareProfile):
    curves, name = hw.memory.kernel_efficiency, op.curve
    while name not in curves and name in CURVE_FALLBACK:
        name = CURVE_FALLBACK[name]
    return curves.get(name)


def _memory_efficiency(op: Op, hw: HardwareProfile, per_kernel):
    """Achieved fraction of the peak bandwidth at ``per_kernel`` bytes: the measured curve of
    the op's kernel family (``memory.kernel_efficiency[op.curve]``, e.g. the split-K decode
    attention kernels, benchmarks/bench_kernels.py) where the profile has one, else the fitted
    ``memory.efficiency``. On a family curve the time runs along straight lines between its
    measured points (a fixed ramp plus streaming, so it never falls with size where the measured
    times do not; efficiency interpolated in log size would dip where the time is nearly flat),
    below its smallest size along the line through its two smallest points, never below that
    line's intercept, and past its largest at the largest point's efficiency."""
    curve = _kernel_curve(op, hw)
    if curve is None:
        return hw.memory.efficiency.at(per_kernel)
    x = np.maximum(np.asarray(per_kernel, dtype=float), 1.0)
    if len(curve.points) < 2:
        return curve.at(x)
    peak = hw.memory.bandwidth_Bps.value
    return x / (peak * kernel_seconds(curve.points, peak, x))  # never above the peak rate


def _memory_time(op: Op, hw: HardwareProfile):
    moved = np.asarray(op.hbm_bytes, dtype=float)
    eff = _memory_efficiency(op, hw, _per_kernel(moved, op.launches))
    if op.access == "gather" and hw.memory.gather_efficiency is not None:
        eff = eff * hw.memory.gather_efficiency.value  # rows scattered through the cache
    link = hw.host_link
    if op.access == "assemble" and link is not None and link.assemble_efficiency is not None:
        eff = np.minimum(eff, link.assemble_efficiency.value)  # torch's strided cat and index_select
    hbm = _over(moved, hw.memory.bandwidth_Bps.value * eff)
    loaded = np.asarray(op.loaded_bytes, dtype=float)
    if hw.memory.reread_Bps is None or not np.any(loaded > 0):
        return hbm
    return np.maximum(hbm, loaded / hw.memory.reread_Bps.value)  # repeats served by L2 still take time


def _link_time(op: Op, hw: HardwareProfile):
    h2d, d2h = np.asarray(op.h2d, dtype=float), np.asarray(op.d2h, dtype=float)
    if hw.host_link is None:  # a CPU: "transfers" are copies within DRAM
        return _over((h2d + d2h) * 2, hw.memory.bandwidth_Bps.value)
    eff = _link_efficiency(op, hw.host_link, h2d + d2h)
    # full duplex: the two directions proceed together
    return np.maximum(_over(h2d, hw.host_link.h2d_Bps.value * eff), _over(d2h, hw.host_link.d2h_Bps.value * eff))


def _link_efficiency(op: Op, link, moved):
    """Fraction of the link's peak: measured curves where the profile has them (pinned copies by
    bytes per copy; kernels reading pinned rows in place by bytes per row), else its scalar."""
    eff = np.asarray(link.efficiency.value, dtype=float)
    if link.copy_efficiency is not None:
        eff = link.copy_efficiency.at(_per_kernel(moved, op.launches))
    rows = np.asarray(op.link_row_bytes, dtype=float)
    if link.gather_efficiency is not None and np.any(rows > 0):
        eff = np.where(rows > 0, link.gather_efficiency.at(rows), eff)
    return eff


def _interconnect_time(op: Op, hw: HardwareProfile):
    return collective_time(op.comm_bytes, op.launches, op.comm_steps, op.comm_gpus, hw)


def _host_time(op: Op, hw: HardwareProfile):
    bandwidth = hw.host.bandwidth_Bps.value if hw.host else hw.memory.bandwidth_Bps.value
    return np.asarray(op.host_bytes, dtype=float) / bandwidth


def _library_time(op: Op, hw: HardwareProfile):
    calls = np.asarray(op.topk_calls, dtype=float)
    if hw.topk is None:
        return np.zeros_like(calls)
    read = np.where(calls > 0, np.asarray(op.hbm_read, dtype=float), 0.0)
    multi = calls * hw.topk.call_s.value + read / hw.topk.throughput_Bps.value
    if hw.topk.single_block is None:
        return multi
    return multi + np.asarray(op.topk_single_calls, dtype=float) * hw.topk.single_block.call_time(*op.topk_shape)


def op_floors(op: Op, hw: HardwareProfile) -> dict:
    """name (BOUNDS) -> seconds: each floor of the op's time, element by element."""
    return {
        "compute": _compute_time(op, hw),
        "memory": _memory_time(op, hw),
        "link": _link_time(op, hw),
        "interconnect": _interconnect_time(op, hw),
        "host": _host_time(op, hw),
        "latency": np.asarray(op.launches, dtype=float) * hw.launch_overhead_s.value,
        "library": _library_time(op, hw),
    }


def op_time(op: Op, hw: HardwareProfile) -> OpTime:
    floors = op_floors(op, hw)
    values = [floors[name] for name in BOUNDS]
    stacked = np.empty((len(values),) + np.broadcast_shapes(*(np.shape(v) for v in values)))
    for row, value in enumerate(values):  # each floor broadcast into its row
        stacked[row] = value
    return OpTime(op, stacked.max(axis=0), stacked.argmax(axis=0), floors)


@dataclass(frozen=True)
class StepTime:
    ops: tuple[OpTime, ...]
    latency_s: np.ndarray
    compute_stream_s: np.ndarray
    copy_stream_s: np.ndarray
    engine: str = "graphs"
    host_s: np.ndarray = 0.0  # eager: the host's time to issue the step's calls and syncs


def _running_max(host, gpu):
    """max over i of (host[:i+1].sum() + gpu[i:].sum()) over ops in order (lists of arrays),
    and the two sums: when the last op is done if the GPU starts each op once it is issued."""
    if not host:
        return np.asarray(0.0), np.asarray(0.0), np.asarray(0.0)
    issued, pending, best = np.asarray(0.0), sum(gpu, np.asarray(0.0)), np.asarray(-np.inf)
    for h, g in zip(host, gpu):
        issued = issued + h
        best = np.maximum(best, issued + pending)
        pending = pending - g
    return best, issued, sum(gpu, np.asarray(0.0))


def _segments(part, layers: int):
    """Ops of one layer split after each op that syncs in every layer (the host waits there)."""
    segments, current = [], []
    for t in part:
        current.append(t)
        if np.all(np.asarray(t.op.host_syncs, dtype=float) >= layers):
            segments.append(current)
            current = []
    return segments + [current] if current else segments


def _costs(part, hw, share):
    return _running_max([host_issue_time(t.op, hw) * share for t in part], [t.time_s * share for t in part])


def _eager_stream(timed: tuple[OpTime, ...], hw: HardwareProfile, layers: int):
    """(step time, host issue time) of ops issued eagerly (module docstring)."""
    first = next((i for i, t in enumerate(timed) if t.op.name.startswith("layers/")), len(timed))
    per_step = [t for t in timed[first:] if not t.op.name.startswith("layers/")]
    early = [t for t in per_step if t.op.kind in STEP_START_KINDS]
    layer_ops = [t for t in timed if t.op.name.startswith("layers/")]
    pre, pre_h, _ = _costs([*timed[:first], *early], hw, 1.0)
    post, post_h, post_g = _costs([t for t in per_step if t.op.kind not in STEP_START_KINDS], hw, 1.0)
    layer, layer_h, layer_g = _costs(layer_ops, hw, 1.0 / layers)
    segments = _segments(layer_ops, layers)
    if any(np.all(np.asarray(t.op.host_syncs, dtype=float) >= layers) for t in layer_ops):
        # a sync in every layer: both streams are level after it, so the segments add up
        level = sum((_costs(seg, hw, 1.0 / layers)[0] for seg in segments), np.asarray(0.0))
        return pre + layers * level + post, pre_h + layers * layer_h + post_h
    overlapped = np.maximum(np.maximum(pre + layers * layer_g + post_g,
                                       pre_h + layer + (layers - 1) * np.maximum(layer_h, layer_g) + post_g),
                            pre_h + layers * layer_h + post)
    return overlapped, pre_h + layers * layer_h + post_h


def graph_replay_time(hw: HardwareProfile) -> float:
    """The fixed cost of one CUDA-graph replay (the profile's measured ``graph_launch_s``; 0
    where the profile has none): the device starting the graph and its first node, paid once per
    replayed step, beside each kernel's own launch floor."""
    return hw.graph_launch_s.value if hw.graph_launch_s is not None else 0.0


def step_time(cost: Cost, hw: HardwareProfile, engine: str = "graphs", layers: int = 1) -> StepTime:
    """The step's time on ``engine`` (ENGINES); ``layers``: the layers the ``layers/`` ops run in."""
    if engine not in ENGINES:
        raise KvsimError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    timed = tuple(op_time(op, hw) for op in cost.ops)
    compute_ops = tuple(t for t in timed if t.op.stream == "compute")
    copy = sum((t.time_s for t in timed if t.op.stream == "copy"), np.asarray(0.0))
    if engine == "graphs":
        compute = sum((t.time_s for t in compute_ops), np.asarray(0.0)) + graph_replay_time(hw)
        return StepTime(timed, pipelined_step(timed, compute, copy, layers), compute, copy)
    # eager: copy-stream ops are issued from the same host thread, their transfers run beside
    issued = tuple(t if t.op.stream == "compute" else OpTime(t.op, 0.0 * t.time_s, t.bound, t.floors)
                   for t in timed)
    compute, host = _eager_stream(issued, hw, max(int(layers), 1))
    return StepTime(timed, np.maximum(compute, copy), compute, copy, engine, host)
