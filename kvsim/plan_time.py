"""Steady-state options on graphs (in ``kvsim.plan``: every hardware, method and GPU count)
timed by a few roofline calls per hardware: one ``op_floors`` call per kind of op, not one
``op_time`` call per op.

Each option's cost is an array over its batches (last axis); option i keeps its first
``sizes[i]``. What ``op_time`` reads of an op is its quantities, element by element, and a few
fields that pick the rates and curves (``PER_OP``). The ops of all options of one hardware
that agree in those fields are laid end to end and timed by one call; each element is computed
as when its option is timed alone, and its time is the largest floor, as in ``op_time``. Each
option's latency then adds its ops' times in its own op order, then the graph replay, as
``roofline.step_time`` does on graphs, so the latencies are the same numbers.
An option with ops on the copy stream (KV offloaded) is timed alone by ``step_time``. Where
op_time raises for a kind (a GPU count beyond the node), its ops are timed one by one, and an
option fails with the error of its first op that raises, as ``step_time`` would.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from .cost import Cost, Op
from .errors import KvsimError
from .hardware import HardwareProfile
from .roofline import graph_replay_time, op_floors, step_time

PER_OP = ("dtype", "access", "curve", "comm_gpus", "link_row_bytes")
PER_ELEMENT = ("flops", "hbm_read", "hbm_write", "h2d", "d2h", "host_bytes", "comm_bytes", "launches",
               "topk_calls", "topk_single_calls", "loaded_bytes", "gemm_rows", "comm_steps")
COLUMNS = PER_ELEMENT + ("topk_rows", "topk_size")  # the last two: topk_shape


def _layout(cost: Cost, layouts: dict, width: int) -> list:
    """Per kind of op (PER_OP values): (its ops, the columns (COLUMNS) not zero for them,
    column × op × batch of those, the first ``width`` batches). Kept in ``layouts`` by the
    identity of the cost's ops: hardware with other residents share them (kvsim.plan_memo)."""
    if id(cost.ops) not in layouts:
        kinds: dict = {}
        for i, op in enumerate(cost.ops):
            kinds.setdefault(tuple(op.__dict__[name] for name in PER_OP), []).append(i)
        rows = [[op.__dict__[name] for name in PER_ELEMENT] + list(op.topk_shape) for op in cost.ops]
        width = min(width, max((v.shape[-1] for row in rows for v in row if isinstance(v, np.ndarray) and v.ndim),
                               default=1))
        layout = []
        for key, ops in kinds.items():
            nonzero = sorted({column for i in ops for column, value in enumerate(rows[i])  # arrays, numbers not 0
                              if isinstance(value, np.ndarray) and value.ndim or value})
            block = np.zeros((len(nonzero), len(ops), width))
            for row, column in enumerate(nonzero):
                values = [rows[i][column] for i in ops]
                if all(isinstance(v, np.ndarray) and v.ndim == 1 and v.size >= width for v in values):
                    block[row] = [v[:width] for v in values]  # every op's over the batches: one copy
                else:
                    for j, value in enumerate(values):
                        block[row, j] = value[..., :width] if isinstance(value, np.ndarray) and value.ndim else value
            layout.append((key, np.array(ops), np.array(nonzero, dtype=int), block))
        layouts[id(cost.ops)] = (cost.ops, layout)
    return layouts[id(cost.ops)][1]


def _kind_time(hw: HardwareProfile, key: tuple, members: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(where in op position × batch, time): one kind of op of every option, one op_time call.
    A column that is zero for all of them is passed as 0."""
    used = np.array(sorted(set().union(*(nonzero.tolist() for *_, nonzero in members))), dtype=int)
    counts = [block.shape[1] * block.shape[2] for block, *_ in members]
    values, at = np.zeros((used.size, sum(counts))), 0
    for (block, _, _, nonzero), count in zip(members, counts):
        whole = values[:, at:at + count].reshape(block.shape) if nonzero.size == used.size else None
        if whole is not None and whole.base is values:  # all the columns, through a view (one copy)
            whole[...] = block
        else:
            values[np.searchsorted(used, nonzero), at:at + count] = block.reshape(nonzero.size, count)
        at += count
    firsts = np.concatenate([ops * width + start for _, start, ops, _ in members])  # each op's first batch
    sizes = np.repeat([block.shape[2] for block, *_ in members], [ops.size for _, _, ops, _ in members])
    where = np.repeat(firsts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
    given = dict(zip((COLUMNS[i] for i in used), values))
    quantities = {name: given.get(name, 0.0) for name in COLUMNS}
    op = Op("ops timed together", "elementwise", **dict(zip(PER_OP, key)),  # op_time does not read the kind
            **{name: quantities[name] for name in PER_ELEMENT},
            topk_shape=(quantities["topk_rows"], quantities["topk_size"]))
    return where, reduce(np.maximum, op_floors(op, hw).values())  # as op_time's max over its floors


def _kind_times(hw: HardwareProfile, key: tuple, members: list, width: int, times: np.ndarray, failed: dict) -> None:
    """One kind of op of every option timed into ``times`` (op position × batch). Where
    op_time raises, each op alone: an option fails with the error of its first op that
    raises (``failed``: option -> (op position, error)), as ``step_time`` raises it."""
    try:
        where, time_s = _kind_time(hw, key, [member[:4] for member in members], width)
        times.reshape(-1)[where] = time_s
    except KvsimError as exc:
        if len(members) > 1 or members[0][2].size > 1:
            for block, start, ops, nonzero, option in members:
                for j in range(ops.size):
                    _kind_times(hw, key, [(block[:, j:j + 1], start, ops[j:j + 1], nonzero, option)], width, times, failed)
            return
        position, option = int(members[0][2][0]), members[0][4]
        if position < failed.get(option, (np.inf,))[0]:
            failed[option] = (position, exc.with_traceback(None))  # no frames (and arrays) kept


def _one_hardware(hw: HardwareProfile, costs: list[Cost], sizes: list[int], layouts: dict, widths: dict) -> list:
    """``time_together`` for the options of one hardware. A member of a kind: (its block, the
    option's first column in ``times``, the op positions, the columns not zero, the option)."""
    alone = [any(op.stream != "compute" for op in cost.ops) for cost in costs]
    edges = np.r_[0, np.cumsum(sizes)].astype(int)
    width = int(edges[-1])
    times = np.zeros((max(len(cost.ops) for cost in costs), width))  # op position × batch
    groups: dict = {}
    for i, cost in enumerate(costs):
        if not alone[i]:
            for key, ops, nonzero, block in _layout(cost, layouts, widths[id(cost.ops)]):
                block = block[:, :, :sizes[i]] if block.shape[2] > 1 else np.broadcast_to(block, block.shape[:2] + (sizes[i],))
                groups.setdefault(key, []).append((block, edges[i], ops, nonzero, i))
    failed: dict = {}
    for key, members in groups.items():
        _kind_times(hw, key, members, width, times, failed)
    compute = np.asarray(0.0)
    for row in times:  # each option's ops in its own order (an option with fewer ops adds zeros)
        compute = compute + row
    compute = compute + graph_replay_time(hw)
    return [_alone(cost, hw, size) if alone[i] else failed[i][1] if i in failed else compute[start:stop]
            for i, (cost, size, start, stop) in enumerate(zip(costs, sizes, edges[:-1], edges[1:]))]


def time_together(hws, costs: list[Cost], sizes: list[int]) -> list:
    """Each cost's step latency on graphs on its hardware (``hws[i]``, or one profile for all)
    at its first ``sizes[i]`` batches (last axis), or the KvsimError timing it alone raises.
    The options of one hardware are timed together; ops that costs share between hardware
    (kvsim.plan_memo) are laid out once, as wide as the most batches any of them is timed at."""
    hws = [hws] * len(costs) if isinstance(hws, HardwareProfile) else list(hws)
    widths: dict = {}
    for cost, size in zip(costs, sizes):
        widths[id(cost.ops)] = max(widths.get(id(cost.ops), 0), size)
    each: dict = {}
    for i, hw in enumerate(hws):
        each.setdefault(id(hw), []).append(i)
    layouts: dict = {}
    latencies: list = [None] * len(costs)
    for rows in each.values():
        timed = _one_hardware(hws[rows[0]], [costs[i] for i in rows], [sizes[i] for i in rows], layouts, widths)
        for i, latency in zip(rows, timed):
            latencies[i] = latency
    return latencies


def _alone(cost: Cost, hw: HardwareProfile, size: int):
    try:
        latency = np.atleast_1d(step_time(cost, hw).latency_s)
    except KvsimError as exc:
        return exc.with_traceback(None)
    return np.broadcast_to(latency, (max(latency.size, size),))[:size]
