"""Cost + hardware -> time per op and per step.

Per op (all arrays): the compute time (FLOPs over peak × efficiency at the FLOPs per kernel; a
matrix product's rows padded to whole tiles where the profile measured the tile),
the memory time (bytes over bandwidth × efficiency at the bytes per kernel, × the profile's
gather efficiency for rows read one by one through an index list; at least the bytes the
programs load, repeats included, over the measured re-read rate, where the op says so), the host-link time
per direction, the interconnect time, the launch floor (kernels × launch overhead), and for ops
that stand for torch.topk's radix selects (multi-block: about 20 kernels a call; single-block:
one thread block per row, ~18 passes over it) the profile's measured cost of such calls, where
it has one. The op takes the largest; its ``bound`` names
which. Ops on the "compute" stream run one after another;
"copy" ops run beside them, so the step takes the longer of the two streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cost import Cost, Op
from .hardware import HardwareProfile

BOUNDS = ("compute", "memory", "link", "interconnect", "host", "latency", "library")


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


def _tile_padding(op: Op, hw: HardwareProfile):
    """A matrix product's rows (tokens) run in whole tiles: ⌈M/tile⌉·tile / M times its FLOPs."""
    rows = np.asarray(op.gemm_rows, dtype=float)
    if hw.compute.tile_rows is None or not np.any(rows > 0):
        return 1.0
    tile = hw.compute.tile_rows.value
    return np.where(rows > 0, np.ceil(np.maximum(rows, 1.0) / tile) * tile / np.maximum(rows, 1.0), 1.0)


def _memory_time(op: Op, hw: HardwareProfile):
    moved = np.asarray(op.hbm_bytes, dtype=float)
    eff = hw.memory.efficiency.at(_per_kernel(moved, op.launches))
    if op.access == "gather" and hw.memory.gather_efficiency is not None:
        eff = eff * hw.memory.gather_efficiency.value  # rows scattered through the cache
    hbm = moved / (hw.memory.bandwidth_Bps.value * eff)
    loaded = np.asarray(op.loaded_bytes, dtype=float)
    if hw.memory.reread_Bps is None or not np.any(loaded > 0):
        return hbm
    return np.maximum(hbm, loaded / hw.memory.reread_Bps.value)  # repeats served by L2 still take time


def _link_time(op: Op, hw: HardwareProfile):
    h2d, d2h = np.asarray(op.h2d, dtype=float), np.asarray(op.d2h, dtype=float)
    if hw.host_link is None:  # a CPU: "transfers" are copies within DRAM
        return (h2d + d2h) * 2 / hw.memory.bandwidth_Bps.value
    eff = _link_efficiency(op, hw.host_link, h2d + d2h)
    # full duplex: the two directions proceed together
    return np.maximum(h2d / (hw.host_link.h2d_Bps.value * eff), d2h / (hw.host_link.d2h_Bps.value * eff))


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
    sent = np.asarray(op.comm_bytes, dtype=float)
    if hw.interconnect is None:
        return np.where(sent > 0, np.inf, 0.0)
    link = hw.interconnect
    busy = sent / (link.bandwidth_Bps.value * link.efficiency.value)
    return np.where(sent > 0, busy + link.latency_s.value * np.asarray(op.launches, dtype=float), 0.0)


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


def op_time(op: Op, hw: HardwareProfile) -> OpTime:
    floors = {
        "compute": _compute_time(op, hw),
        "memory": _memory_time(op, hw),
        "link": _link_time(op, hw),
        "interconnect": _interconnect_time(op, hw),
        "host": _host_time(op, hw),
        "latency": np.asarray(op.launches, dtype=float) * hw.launch_overhead_s.value,
        "library": _library_time(op, hw),
    }
    stacked = np.stack(np.broadcast_arrays(*[floors[name] for name in BOUNDS]))
    return OpTime(op, stacked.max(axis=0), stacked.argmax(axis=0), floors)


@dataclass(frozen=True)
class StepTime:
    ops: tuple[OpTime, ...]
    latency_s: np.ndarray
    compute_stream_s: np.ndarray
    copy_stream_s: np.ndarray


def step_time(cost: Cost, hw: HardwareProfile) -> StepTime:
    timed = tuple(op_time(op, hw) for op in cost.ops)
    compute = sum((t.time_s for t in timed if t.op.stream == "compute"), np.asarray(0.0))
    copy = sum((t.time_s for t in timed if t.op.stream == "copy"), np.asarray(0.0))
    return StepTime(timed, np.maximum(compute, copy), compute, copy)
