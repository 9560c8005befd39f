"""Decode with the oldest part of the KV cache in pinned host memory, the way the reference
runtime does it (runtime/offload.py; ALISA Phase II, arXiv 2403.17312 §4.3; FlexGen's CPU
placement, arXiv 2303.06865 §4). Fraction f: of each layer's S tokens (the new one included)
the oldest H = min(⌊f·S⌋, S − 1) live on the host; the rest, and always the new token, on the GPU.

Per decode step, summed over layers, with ρ = one row's K and V for one KV head (kv_row_bytes):
  h2d   ρ per row the method reads below H. A layer that reads every row takes the block
        [0, H) in one pinned copy per field (K, V; + the int8 scales and zero points), timed by
        the profile's copy efficiency; a method that ``prefetches_blocks`` (dense; Quest's dense
        layers; TidalDecode's dense and selection layers) fetches them on a copy stream, each
        overlapping the layer before (:func:`pipelined_step`), others when the layer attends.
        Selected rows are read in place from pinned memory by a GPU gather kernel
        (kernels/host_gather.py) when their layer attends (the rows are known only then), on
        the compute stream, one launch per field, each timed by the zero-copy gather
        efficiency at its own bytes per row: d·b_kv for K and V, 2 for an int8 scale or zero
  d2h   f·ρ per (sequence, KV head): rows the boundary passes move to the host (⌊f·(S+1)⌋ −
        ⌊f·S⌋ rows a step, f on average), on the compute stream's critical path (the next
        ring write waits for it); the positions never leave the device
  HBM   the fetched rows written into a device buffer that attention then reads (ρ each); a
        block reader with a 16-bit cache attends to the block and the ring rows where they lie,
        as three pieces (the block; the ring rows [H, S) as two slot ranges, since their slots
        wrap past the ring's end in general) merged by log-sum-exp: per block layer two more
        attention calls (q read, o or split partials written, + combine) and the merge's stacks
        of the pieces' o and lse (``offload/attention_pieces``; kernels/decode.py
        merge_partials); an int8 cache joins block and ring rows into one [B, heads, S] tensor
        instead (the ring rows picked out, then concatenated: (S − H)·2ρ + S·2ρ; torch's strided
        cat and index_select, at the profile's ``host_link.assemble_efficiency``:
        ``offload/assemble_block``); the gather kernel copies a
        list's ring rows alongside (read and write ρ each, not charged: the same kernel waits
        on the link far longer)
Host calls (eager engine): each op issues the runtime's calls (runtime/offload.py), counted
as runtime/launches.py counts them.
Memory: H·ρ per (layer, sequence, KV head) moves from the GPU to the host; the fetched blocks
of up to two layers at once (one where the method fetches a block only when its layer attends)
are held on the GPU, H·ρ per (sequence, KV head) each.
Which rows a method reads below H is its ``host_rows_read``: (rows read as whole blocks, rows
gathered), each summed over layers and lists per sequence; a method without it cannot run
offloaded in the reference runtime.
"""
from __future__ import annotations

import numpy as np

from .cost import Cost, Op, Resident
from .errors import KvsimError
from .models import ModelConfig
from .workload import Workload


def host_rows(wl: Workload, fraction: float):
    """H: tokens per layer on the host, min(⌊f·S⌋, S − 1)."""
    seq = np.asarray(wl.seq, dtype=float)
    return np.maximum(np.minimum(np.floor(fraction * seq), seq - 1.0), 0.0)


def require_host_link(hw, what: str) -> None:
    """KV in host memory needs a GPU with a host link in its profile (a CPU profile has none)."""
    if hw.kind != "gpu" or hw.host_link is None:
        raise KvsimError(f"{what}: {hw.name} is not a GPU with a host link; KV in host memory needs one "
                         "(choose a GPU profile)")


def check_fraction(method, fraction) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise KvsimError(f"offload must be a fraction in [0, 1], got {fraction}")
    if fraction > 0 and not method.offload:
        from .methods import names_with
        raise KvsimError(f"offload: {method.name} cannot run with KV on the host (its cache is not "
                         f"position-ordered or it reads every key); use {', '.join(names_with('offload'))}")
    return fraction


GATHER_ARGS = 16  # runtime arguments of one host-gather launch: HOST, DEV, OUT, IDX, COUNT,
# boundary, ring, B, HKV, K, two index strides, three device-row strides, group (kernels/host_gather.py)


def offload_cost(method, model: ModelConfig, wl: Workload, fraction: float) -> Cost:
    """The transfers and memory move of one decode step (module doc)."""
    H = host_rows(wl, fraction)
    row = method.row_bytes(model, wl)
    block, gathered = (wl.batch * rows for rows in method.host_rows_read(model, wl, H))
    pairs = model.n_layers * wl.batch * model.n_kv_heads
    fields = 6 if method.kv_workload(wl).kv_dtype == "int8" else 2  # K, V (+ a scale and a zero point each)
    moved = pairs * H * row
    b_kv = method.kv_workload(wl).b_kv
    gathering = model.n_layers - _block_layers(model, wl, H, block)  # a layer reads a block or gathers
    ops = (*_block_ops(method, model, wl, H, block, row, fields),
           *_gather_ops(gathering, model, gathered, row, fields, b_kv),
           _evict_op(model, pairs, fraction, row, fields))
    return Cost(ops, (Resident("kv_on_host", gpu=-moved, host=moved, kv=True),
                      Resident("offload_blocks", gpu=_blocks_in_flight(method, model, wl, H, block) * row)))


def _blocks_in_flight(method, model, wl, H, block):
    """Rows of the fetched host blocks the GPU holds at once: a block layer's [0, H) of every
    (sequence, KV head), B·Hkv·H rows, for two layers where the method prefetches (layer 0's
    and layer 1's start together, then each layer's with the one before it: runtime/method.py
    ``prefetch_blocks``), else one; freed once its layer has attended."""
    layers = np.asarray(_block_layers(model, wl, H, block), dtype=float)
    most = 2.0 if getattr(method, "prefetches_blocks", False) else 1.0
    return np.minimum(np.ceil(layers), most) * wl.batch * model.n_kv_heads * H


def _block_layers(model, wl, H, block):
    """Layers that read their host block whole: block rows over B·Hkv·H a layer (0 where none)."""
    per_layer = wl.batch * model.n_kv_heads * np.asarray(H, dtype=float)
    return np.where(per_layer > 0, np.asarray(block, dtype=float) / np.maximum(per_layer, 1.0), 0.0)


def _block_ops(method, model, wl, H, block, row, fields):
    """A block-reading layer: one pinned copy per field of [0, H) (``.to``: an allocation and a
    copy; dense fetches it on the copy stream while the layer before runs, others when the layer
    attends), then on the compute stream the pieces' attention and merge (16-bit caches), or the
    block joined with its ring rows (int8 caches)."""
    layers = _block_layers(model, wl, H, block)
    copy = getattr(method, "prefetches_blocks", False)
    fetch = Op("offload/fetch_block", "attention", h2d=block * row, hbm_write=block * row, launches=layers * fields,
               stream="copy" if copy else "compute", copy_layers=layers if copy else 0.0)
    fetch = fetch.issued(torch=layers * fields, torch_host=layers * fields)
    if fields == 6:
        return fetch, _assemble_op(wl, H, block, row, layers, fields)
    logits = np.minimum(getattr(method, "block_logits_layers", 0), layers)
    return fetch, _pieces_op(model, wl, H, layers, logits, fields)


def _assemble_op(wl, H, block, row, layers, fields):
    """An int8 cache's join (runtime/offload.py ``prefix``): the ring rows [H, S) picked
    (index_select: read and write each) and joined behind the block (cat: read and write all S
    rows), per field; slot indices: an arange and a modulo per layer; a movedim view per field."""
    ring = block * (np.asarray(wl.seq, dtype=float) - H) / np.maximum(H, 1.0)  # [H, S) of the same lists
    joined = block + ring
    assemble = Op("offload/assemble_block", "attention", hbm_read=(ring + joined) * row,
                  hbm_write=(ring + joined) * row, launches=layers * (2 + 2 * fields), access="assemble")
    return assemble.issued(torch=layers * (2 + 2 * fields), torch_host=layers * fields)


PIECES = 3  # block + two ring slices: the ring rows [H, S) wrap past the ring's end in general
LOGSUMEXP_KERNELS = 9  # ATen's logsumexp: amax, abs, eq, masked_fill, sub, exp, sum, log, add


def _pieces_op(model, wl, H, layers, logits, fields):
    """What a 16-bit block layer runs beyond the method's one attention call over its S rows
    (runtime/cache.py ``_attend_pieces``): the ring rows [H, S) as two more calls of (S − H)/2
    rows (charged always: the slots wrap in general), each with its split-K combine where it
    splits; every piece's lse; the log-sum-exp merge (kernels/decode.py merge_partials: stack
    o and lse, softmax, mul, sum, cast unless fp32). ``logits`` of the layers write them
    (TidalDecode's selection layers): each piece its own, joined by a cat (read and write S·4 per
    query head), and the merged lse (a logsumexp). Per (sequence, KV head) and layer, with
    o = G·d·b_a (a piece's q or o), l = G·4 (its lse), w = G·d·4 (fp32), P = 3 pieces:
      calls  read 2·(o + parts), write 2·(o + parts) + P·l (parts: each split's fp32 partials,
             G·splits·(d+2)·4, written and read back by the combine where it splits)
      merge  read 2P·o + 3P·l + P·w (+ w), write P·o + 2P·l + P·w + w (+ o): the cast;
             FLOPs 2P·G·d (the mul and the sum)
    Host: per field a movedim (block) and two slices (ring), the ring calls' launches and
    allocations (o, lse, partials; + logits), the block call's lse, the merge's torch calls and
    a view. Not charged: the pieces' length tensors (KVCache.seq_lens, cached by length: a fill
    for each length not seen lately, 1-3 a step), as the device path's one a step is not."""
    from .methods.attention import ATTENTION_ARGS, COMBINE_ARGS
    from .kernel_contract import DENSE_TARGET_PROGRAMS, split_count
    G, d, P = model.group, model.head_dim, PIECES
    S = np.asarray(wl.seq, dtype=float)
    splits = split_count(wl.batch, model.n_kv_heads, np.maximum((S - H) / 2, 1.0), DENSE_TARGET_PROGRAMS)
    several = (splits > 1).astype(float)
    cast = float(wl.b_a != 4)
    o, lse, w = G * d * wl.b_a, G * 4.0, G * d * 4.0
    parts = several * G * splits * (d + 2) * 4.0
    read = 2 * (o + parts) + 2 * P * o + 3 * P * lse + P * w + cast * w
    write = 2 * (o + parts) + P * lse + P * o + 2 * P * lse + P * w + w + cast * o
    joined = G * S * 4.0  # the pieces' logits, read and written by the cat
    pairs = wl.batch * model.n_kv_heads
    calls = 2 * (1 + several)
    op = Op("offload/attention_pieces", "attention", flops=pairs * layers * 2 * P * G * d,
            hbm_read=pairs * (layers * read + logits * (P * lse + joined)),  # + the logsumexp's lses
            hbm_write=pairs * (layers * write + logits * (lse + joined)),
            launches=layers * (calls + 5 + cast) + logits * (LOGSUMEXP_KERNELS + 1), dtype="fp32")
    return op.issued(triton=layers * calls, args=layers * 2 * (ATTENTION_ARGS["bf16"] + COMBINE_ARGS * several),
                     torch=layers * (5 + cast) + logits * 2,
                     # views 3·fields + 1; allocations: 2·(2 + several) of the ring calls, the block's lse;
                     # logits: + a logits buffer per ring call, the block's lse counted by the method
                     torch_host=layers * (3 * fields + 2 * (2 + several) + 2) + logits)


def _gather_ops(layers, model, gathered, row, fields, b_kv):
    """Selected rows read in place from pinned memory: one gather launch per field and layer
    that selects (``layers``: those not reading a whole block) into a fresh buffer (an
    allocation each), each kernel timed at its own bytes per row: K and V rows of d·b_kv; int8
    caches add four launches of one fp16 scale or zero point per row."""
    kv = 2 * model.head_dim * b_kv  # the K and V bytes of ``row``
    on = np.asarray(gathered) > 0
    ops = []
    for name, nbytes, count in (("offload/gather_rows", kv, 2), ("offload/gather_scales", row - kv, fields - 2)):
        if count == 0:
            continue
        launches = np.where(on, layers * count, 0.0)
        op = Op(name, "attention", h2d=gathered * nbytes, hbm_write=gathered * nbytes, launches=launches,
                access="gather", link_row_bytes=nbytes / count)
        ops.append(op.issued(triton=launches, torch_host=launches, args=GATHER_ARGS * launches))
    return tuple(ops)


def _evict_op(model, pairs, fraction, row, fields):
    """Rows the boundary passes go to the host: f of the steps, per layer slot indices (arange,
    modulo) and per field an index and a contiguous copy (each reads and writes the rows) and the
    d2h copy, with two views between (the rows moved position-first, the host pool's slice)."""
    per_step = fraction * model.n_layers
    return Op("offload/evict_rows", "attention", d2h=pairs * fraction * row, hbm_read=2 * pairs * fraction * row,
              hbm_write=2 * pairs * fraction * row, launches=per_step * fields).issued(  # launches: the copies
        torch=per_step * (2 + 3 * fields), torch_host=per_step * 2 * fields)


LAYER_KINDS = ("attention", "cache")  # a method's ops outside ``layers/`` that run in every layer
BLOCK_LAYER_OPS = ("offload/assemble_block", "offload/attention_pieces")  # run in the block layers only


def pipelined_step(timed, compute, copy, layers: int):
    """A step whose N = ``copy_layers`` layers that read every row fetch their host blocks on
    copy streams, as the runtime does (runtime/method.py ``prefetch_blocks``; runtime/offload.py:
    one side stream per layer, each copy forked from the compute stream): layer 0's and layer
    1's blocks start together when layer 0 attends and share the link, so layer 0 waits for
    both (2c); a later layer's starts when the layer before it attends, behind the compute
    issued so far, so the link idles while layer 0 computes. With c = copy / N a block and g
    the compute of one block layer (``layers/`` ops and a method's per-layer kinds over the
    L layers, the ops only block layers run (BLOCK_LAYER_OPS: the pieces' attention and merge,
    or an int8 cache's join) over the N; a selecting layer's gathers are not in it; embedding
    and LM head outside): step = compute + c + (N − 1)·max(0, c − g) + min(c, g) (N ≥ 2: the
    shared start, or the idle link while layer 0 computes), at least max(compute, copy). No
    copy: the compute stream's time. ``timed``: the step's OpTimes."""
    n = sum((np.asarray(t.op.copy_layers, dtype=float) for t in timed if t.op.stream == "copy"), np.asarray(0.0))
    in_layers = [t for t in timed if t.op.stream == "compute" and np.all(np.asarray(t.op.link_row_bytes) == 0)
                 and (t.op.name.startswith("layers/") or t.op.kind in LAYER_KINDS)]
    blocks = sum((t.time_s for t in in_layers if t.op.name in BLOCK_LAYER_OPS), np.asarray(0.0))
    shared = sum((t.time_s for t in in_layers if t.op.name not in BLOCK_LAYER_OPS), np.asarray(0.0))
    copy = np.asarray(copy, dtype=float)
    c = copy / np.maximum(n, 1.0)
    g = shared / max(int(layers), 1) + blocks / np.maximum(n, 1.0)
    start = np.where(n >= 2, np.minimum(c, g), 0.0)
    return np.where(copy > 0, compute + c + np.maximum(n - 1.0, 0.0) * np.maximum(0.0, c - g) + start, compute)


def uniform_share(picked, candidates, H):
    """Expected rows below H among ``picked`` drawn evenly from the ``candidates`` oldest."""
    candidates = np.maximum(np.asarray(candidates, dtype=float), 1.0)
    return picked * np.minimum(H, candidates) / candidates
