"""Several options of one hardware (in ``kvsim.plan``: one method at every GPU count) timed by
one roofline evaluation.

Each option's cost is an array over its batches (last axis). Their ops are laid side by side
along one axis: ops that agree in name, kind, dtype, access and stream share a slot; an op an
option lacks is zeros there (no FLOPs, bytes or launches: time 0); every option's own ops keep
their order. ``step_time`` then adds, for every element, the same terms in the same order as
when the option is timed alone (plus exact zeros), so the latencies are the same numbers.
"""
from __future__ import annotations

from bisect import bisect_left

import numpy as np

from .cost import QUANTITIES, Cost, Op
from .hardware import HardwareProfile
from .roofline import step_time

SLOT_FIELDS = ("name", "kind", "dtype", "access", "curve", "stream", "comm_gpus", "comm_steps", "link_row_bytes")
COLUMNS = QUANTITIES + ("gemm_rows", "topk_rows", "topk_size")  # the last two: topk_shape


def _slots(costs: list[Cost]) -> tuple[list[tuple], list[list[int]]]:
    """Slot keys, and per cost the slot of each op: increasing, so each cost keeps its order."""
    keys: list[tuple] = []
    where: dict[tuple, list[int]] = {}
    placed = []
    for cost in costs:
        mine, start = [], 0
        for op in cost.ops:
            key = tuple(getattr(op, name) for name in SLOT_FIELDS)
            found = where.setdefault(key, [])
            k = bisect_left(found, start)
            if k == len(found):
                keys.append(key)
                found.append(len(keys) - 1)
            mine.append(found[k])
            start = found[k] + 1
        placed.append(mine)
    return keys, placed


def _side_by_side(costs: list[Cost], sizes: list[int]) -> tuple[Cost, np.ndarray]:
    keys, placed = _slots(costs)
    edges = np.r_[0, np.cumsum(sizes)].astype(int)
    block = np.zeros((len(keys), len(COLUMNS), edges[-1]))  # slot × column × batch
    for cost, mine, start, stop in zip(costs, placed, edges[:-1], edges[1:]):
        for op, slot in zip(cost.ops, mine):
            fields = op.__dict__
            values = [fields[name] for name in COLUMNS[:-2]] + list(op.topk_shape)
            for column, value in enumerate(values):
                if isinstance(value, np.ndarray) and value.ndim:  # over the batches: the first ones
                    block[slot, column, start:stop] = value[..., :stop - start]
                elif value:  # zeros are there already
                    block[slot, column, start:stop] = value
    ops = []
    for key, values in zip(keys, block):
        column = dict(zip(COLUMNS, values))
        rows, size = column.pop("topk_rows"), column.pop("topk_size")
        ops.append(Op(**dict(zip(SLOT_FIELDS, key)), **column, topk_shape=(rows, size)))
    return Cost(tuple(ops)), edges


def time_together(hw: HardwareProfile, costs: list[Cost], sizes: list[int]) -> list[np.ndarray]:
    """Each cost's step latency at its first ``sizes[i]`` batches (last axis), from one
    ``step_time`` call."""
    if len(costs) == 1:  # nothing to lay side by side
        latency = np.atleast_1d(step_time(costs[0], hw).latency_s)
        return [np.broadcast_to(latency, (max(latency.size, sizes[0]),))[:sizes[0]]]
    merged, edges = _side_by_side(costs, sizes)
    latency = np.broadcast_to(step_time(merged, hw).latency_s, (edges[-1],))
    return [latency[start:stop] for start, stop in zip(edges[:-1], edges[1:])]
