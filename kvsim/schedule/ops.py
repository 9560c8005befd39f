"""The schedule's own ops at every step of a placement (``placement.py``): the executor's
staging, the loads of selected CPU rows and of deleted rows' x, the weight stream, the
write-back of newly offloaded tokens and the recomputation, each with the host calls the
executor issues for it (runtime/schedule_exec.py, runtime/schedule_store.py,
runtime/schedule_placement.py; tests/test_schedule_exec.py counts them again).
"""
from __future__ import annotations

import numpy as np

from ..cost import Op
from ..offload import GATHER_ARGS
from .inputs import StepInputs
from .placement import Geometry, new_offloads


def _recompute_op(inp: StepInputs, rows) -> Op:
    """Per layer: K,V = x·[Wk Wv] for ``rows`` = B·selected deleted tokens.
    FLOPs 2·rows·D·2KV ; read 2·D·KV·b_w weights + rows·D·b_a ; write rows·2·KV·b_a."""
    m, wl, L = inp.model, inp.wl, inp.model.n_layers
    D, KV, busy = m.d_model, m.kv_dim, rows > 0
    op = Op("schedule/recompute_kv", "recompute", flops=L * rows * 2 * D * 2 * KV,
            hbm_read=L * np.where(busy, 2 * D * KV * wl.b_w + rows * D * wl.b_a, 0.0),
            hbm_write=L * rows * 2 * KV * wl.b_a, launches=L * busy, dtype=wl.compute_dtype)
    rope = 0.0 if m.learned_positions else 1.0  # RoPE on the rebuilt keys
    return _issued(op, _combined((RECOMPUTE_CALLS, 1.0), (ROPE_CALLS, rope)), L * busy)


# Host calls the executor issues beyond ALISA's own eager step (runtime/schedule_exec.py,
# runtime/schedule_store.py, runtime/schedule_placement.py), as runtime/launches.py counts them
# over one timed decode step, with the kernels (tests/test_schedule_exec.py counts them again):
#   SELECT, each layer of every step: the global picks sorted (deleted rows first) and joined
#           with the recent window, their int32 list for the prefetch, each entry's GPU slot
#           (long, index, sub) where the pool is read in place
#   STEP, every step: the recent-window list (arange, its view), the K/V position table's
#           scatter, less the random token draw of the engine's step (the executor feeds back
#           the previous step's tokens); the table's two index lists are INDEX_LISTs
#   INDEX_LIST: one host-built index list on the GPU through pinned memory: the tensor (host
#           only), pin_memory and the non-blocking copy
#   KEEP_X, each layer of a step whose new token's x is kept (position < last): its copy into
#           the x pool; the step scatters the x position table too (+ two INDEX_LISTs), as does
#           a step whose kept x rows leave for the host
#   GATHER: a layer with rows on the host or recomputed: the list's pool codes, two gather
#           launches (GATHER_ARGS each), the new token's row copied into the gathered K and V;
#           no slot lookup (SELECT's long, index and sub) beyond the codes' long and index
#   EVICT:  per pool whose rows leave for the host: index_select, the rows' view, the slice copy
#           (+ one INDEX_LIST per table a step evicts from)
#   COMPACT, per table (K/V, x) a step frees GPU rows of (evicted or deleted): the arena's row
#           moves for every layer at once (one index_select, one index_copy_) and the move list's
#           unbind into destination and source slots (+ one INDEX_LIST)
#   RECOMPUTE: a deleted row's K and V from its kept x: the x gather, norm, the K/V projection,
#           reshapes and the masked write into the gathered rows (+ the RoPE kernel, 23 arguments)
SELECT_CALLS = {"torch": 6.0, "torch_host": 4.0}
STEP_CALLS = {"torch": 1.0, "torch_host": 1.0}
INDEX_LIST_CALLS = {"torch": 2.0, "torch_host": 1.0}
KEEP_X_CALLS = {"torch": 1.0, "torch_host": 4.0}
TABLE_CALLS = {"torch": 1.0}  # a position table's scatter (the x table's; STEP has the K/V one)
GATHER_CALLS = {"torch": 3.0, "torch_host": 5.0, "triton": 2.0, "args": 2.0 * GATHER_ARGS}
EVICT_CALLS_PER_POOL = {"torch": 2.0, "torch_host": 2.0}
COMPACT_CALLS = {"torch": 2.0, "torch_host": 1.0}
RECOMPUTE_CALLS = {"torch": 10.0, "torch_host": 16.0, "gemm": 1.0, "triton": 1.0, "args": float(GATHER_ARGS)}
ROPE_CALLS = {"triton": 1.0, "args": 23.0, "torch_host": 1.0}


def _combined(*terms) -> dict:
    """Σ count·calls over (calls, count) pairs (counts may be arrays)."""
    out = {}
    for calls, count in terms:
        for kind, n in calls.items():
            out[kind] = out.get(kind, 0.0) + n * np.asarray(count, dtype=float)
    return out


def _issued(op: Op, per_layer: dict, layers=1.0) -> Op:
    """``op`` with the host calls ``per_layer`` issued in each of ``layers`` (an array per step)."""
    n = np.asarray(layers, dtype=float)
    return op.issued(torch=per_layer.get("torch", 0.0) * n, torch_host=per_layer.get("torch_host", 0.0) * n,
                     triton=per_layer.get("triton", 0.0) * n, gemm=per_layer.get("gemm", 0.0) * n,
                     args=per_layer.get("args", 0.0) * n)


def _transfer_op(name: str, inp: StepInputs, h2d, d2h, gathered, stream: str) -> Op:
    """One cudaMemcpyAsync per layer; the CPU gathers the selected rows from DRAM into pinned
    memory first (read + write of ``gathered`` bytes)."""
    busy = (np.asarray(h2d) + np.asarray(d2h)) > 0
    return Op(name, "transfer", h2d=h2d, d2h=d2h, host_bytes=2.0 * gathered + d2h,
              launches=inp.model.n_layers * busy, stream=stream)


def _gather_op(inp: StepInputs, load, gathered, stream: str) -> Op:
    """Selected CPU rows (K, V; a deleted row's kept x in d-wide pieces) read in place from
    pinned memory by the GPU gather kernel (kernels/host_gather.py, as runtime/schedule_store.py
    runs it; no CPU-side gather): per layer one launch per field, into a buffer (written once),
    each row d·b_kv bytes, timed at the profile's zero-copy gather efficiency for that row.
    ``gathered``: the steps whose layers read a gathered copy (rows on the host or recomputed),
    where the executor issues the gather even when no selected row is on the host."""
    busy = np.asarray(gathered, dtype=bool) | (np.asarray(load) > 0)
    op = Op("schedule/load_selected", "transfer", h2d=load, hbm_write=load, launches=2 * inp.model.n_layers * busy,
            access="gather", link_row_bytes=inp.model.head_dim * inp.wl.b_kv, stream=stream)
    return _issued(op, GATHER_CALLS, inp.model.n_layers * busy)


def _x_load_op(inp: StepInputs, load_x) -> Op:
    """The kept x of selected deleted rows whose x is in CPU memory, read over PCIe by the
    recomputation's own gather (runtime/schedule_store.py ``_recompute``: d-wide pieces of
    D·b_a per row) on the compute stream, when the layer recomputes: not prefetched. Its launch
    and host calls are the recomputation's (RECOMPUTE_CALLS)."""
    return Op("schedule/load_x", "transfer", h2d=load_x, hbm_write=load_x, launches=0.0 * load_x,
              access="gather", link_row_bytes=inp.model.head_dim * inp.wl.b_a, stream="compute")


def _freed_gpu_rows(inp: StepInputs, geo: Geometry, alpha):
    """GPU rows leaving each step, per sequence: K/V rows to the CPU share, K/V rows deleted
    (the executor's whole deleted count, less the deleted rows already on the CPU: Phase-II rows
    that had left the recent window), kept x rows to the CPU share."""
    new_rows, new_x_rows = new_offloads(inp, geo)
    deleted = np.floor(geo.deleted + 1e-9)  # as the executor deletes (executed.token_plan)
    before = np.concatenate([np.zeros_like(deleted[..., :1]), deleted[..., :-1]], axis=-1)
    old_before = np.concatenate([[0.0], geo.old[:-1]])
    on_cpu = np.maximum(np.minimum(deleted, old_before) - np.maximum(before, geo.start), 0.0)
    return alpha * new_rows, (deleted - before) - alpha * on_cpu, alpha * new_x_rows


def _compact_terms(inp: StepInputs, geo: Geometry, alpha, decode):
    """The arena's row moves (runtime/schedule_placement.py ``_compact``): per step the tables
    that issue them (COMPACT + INDEX_LIST each; evictions weighted by α as EVICT is), the x
    table's among them, and the bytes read and written, one row moved per freed row (at most: a freed row among the last
    ones needs none): the gather reads the row (ρ for a K/V row of every layer, η for x) and
    writes a temporary, the copy reads and writes it again, and each reads its 8-B slot index."""
    evicted, deleted, x = _freed_gpu_rows(inp, geo, alpha)
    kv_table, x_table = np.maximum(alpha * (evicted > 0), 1.0 * (deleted > 1e-9)), alpha * (x > 0)
    rows, moved = decode * (evicted + deleted + x), decode * (inp.rho * (evicted + deleted) + inp.eta * x)
    return decode * (kv_table + x_table), decode * x_table, 2.0 * moved + 16.0 * rows, 2.0 * moved


def _staging_op(inp: StepInputs, geo: Geometry, alpha) -> Op:
    """The executor's bookkeeping in every decode step (SELECT, STEP, KEEP_X, COMPACT above), for a method
    that selects its rows (the executor runs ALISA; a method reading every row has none). Bytes per
    layer and sequence, g global and K = recent + g selected entries, Hkv KV heads: the sort
    reads g·8 and writes values and indices, 8 each; the join reads and writes K·8; the
    prefetch's int32 list [Hkv, K] reads K·8 (broadcast) and writes 4 per entry; per entry of
    the [Hkv, K] lists, the int64 copy reads 4 and writes 8, the slot lookup reads 8 + 4 (the
    index, its code) and writes 4, the subtraction reads and writes 4: 20 read, 20 written."""
    L, B, Hkv = inp.model.n_layers, inp.batch, inp.model.n_kv_heads
    g, K = inp.global_sel, inp.recent + inp.global_sel
    decode = (np.arange(inp.steps) > 0) * float(inp.selects)
    keep = decode * (geo.n - 1 < np.floor(geo.last + 1e-9))  # the new token's x is kept (executed.token_plan)
    per_layer_read = B * (8 * g + 16 * K + 20 * Hkv * K)
    per_layer_write = B * (16 * g + 8 * K + 20 * Hkv * K)
    compacted, x_table, moved_read, moved_write = _compact_terms(inp, geo, alpha, decode)
    x_table = np.maximum(keep, x_table)  # the x table changes where a new x is kept or x rows leave
    calls = _combined((SELECT_CALLS, L * decode), (STEP_CALLS, decode), (INDEX_LIST_CALLS, 2 * decode),
                      (KEEP_X_CALLS, L * keep), (TABLE_CALLS, x_table), (INDEX_LIST_CALLS, 2 * x_table),
                      (COMPACT_CALLS, compacted), (INDEX_LIST_CALLS, compacted))
    # the x row kept: D·b_a read and written per layer
    x_bytes = L * keep * B * inp.model.d_model * inp.wl.b_a
    op = Op("schedule/stage_selection", "elementwise", hbm_read=L * decode * per_layer_read + x_bytes + moved_read,
            hbm_write=L * decode * per_layer_write + x_bytes + moved_write, launches=calls["torch"])
    return _issued(op, calls)


def step_ops(inp: StepInputs, geo: Geometry, alpha, weights_gpu) -> list[Op]:
    """The schedule's own ops at every step: the executor's staging, loads of selected CPU rows,
    the weight stream, the write-back of newly offloaded tokens, and recomputation with the
    loads of its deleted rows' x. A method that selects before the step (``prefetchable``)
    loads K/V rows on the side stream, each layer's rows while the layer before it runs;
    otherwise they wait for the layer's own selection, on the compute stream. The x loads run
    inside the recomputation, on the compute stream."""
    load = alpha * inp.rho * geo.load_rows
    load_x = alpha * inp.eta * geo.load_x_rows
    stream = (1.0 - weights_gpu) * inp.weights * np.ones_like(load)
    new_rows, new_x_rows = new_offloads(inp, geo)
    back = alpha * (inp.rho * new_rows + inp.eta * new_x_rows)
    pools = 2.0 * (new_rows > 0) + (new_x_rows > 0)  # K and V, and x where kept inputs leave too
    tables = 1.0 * (new_rows > 0) + (new_x_rows > 0)  # one index list per table evicted from
    evicts = _combined((EVICT_CALLS_PER_POOL, inp.model.n_layers * alpha * pools), (INDEX_LIST_CALLS, alpha * tables))
    write_back = _issued(_transfer_op("schedule/pcie", inp, stream, back, 0.0 * load, "copy"), evicts)
    gathered = (alpha * geo.offloadable > 0) | (geo.recompute_rows > 0)
    return [_staging_op(inp, geo, alpha), _recompute_op(inp, inp.batch * geo.recompute_rows),
            _gather_op(inp, load, gathered, "copy" if inp.prefetchable else "compute"), _x_load_op(inp, load_x),
            write_back]
