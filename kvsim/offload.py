"""Decode with the oldest part of the KV cache in pinned host memory, the way the reference
runtime does it (runtime/offload.py; ALISA Phase II, arXiv 2403.17312 §4.3; FlexGen's CPU
placement, arXiv 2303.06865 §4). Fraction f: of each layer's S tokens (the new one included)
the oldest H = min(⌊f·S⌋, S − 1) live on the host; the rest, and always the new token, on the GPU.

Per decode step, summed over layers, with ρ = one row's K and V for one KV head (kv_row_bytes):
  h2d   ρ per row the method reads below H. A layer that reads every row takes the block
        [0, H) in one pinned copy per field (K, V; + the int8 scales and zero points), timed by
        the profile's copy efficiency; dense attention fetches a layer's block while the layer
        before it runs (copy stream, overlapped), other block readers when the layer attends.
        Selected rows are read in place from pinned memory by a GPU gather kernel
        (kernels/host_gather.py) when their layer attends (the rows are known only then), on
        the compute stream, timed by the zero-copy gather efficiency at the bytes of one K (or
        V) row, d·b_kv
  d2h   f·ρ per (sequence, KV head): rows the boundary passes move to the host (⌊f·(S+1)⌋ −
        ⌊f·S⌋ rows a step, f on average); the positions never leave the device
  HBM   the fetched rows written into a device buffer that attention then reads (ρ each); the
        gather kernel copies a list's ring rows alongside (read and write ρ each, not charged:
        the same kernel waits on the link far longer)
Memory: H·ρ per (layer, sequence, KV head) moves from the GPU to the host.
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


def check_fraction(method, fraction) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise KvsimError(f"offload must be a fraction in [0, 1], got {fraction}")
    if fraction > 0 and not method.offload:
        from .methods import names_with
        raise KvsimError(f"offload: {method.name} cannot run with KV on the host (its cache is not "
                         f"position-ordered or it reads every key); use {', '.join(names_with('offload'))}")
    return fraction


def offload_cost(method, model: ModelConfig, wl: Workload, fraction: float) -> Cost:
    """The transfers and memory move of one decode step (module doc)."""
    H = host_rows(wl, fraction)
    row = method.row_bytes(model, wl)
    block, gathered = (wl.batch * rows for rows in method.host_rows_read(model, wl, H))
    pairs = model.n_layers * wl.batch * model.n_kv_heads
    kv_wl = method.kv_workload(wl)
    fields = 6 if kv_wl.kv_dtype == "int8" else 2  # K, V (+ a scale and a zero point each)
    launches = model.n_layers * fields
    # kind "attention": the rows are fetched inside the layer's attention, which waits for them
    # a method that knows its blocks ahead (dense) fetches them on the copy stream, overlapped
    stream = "copy" if getattr(method, "prefetches_blocks", False) else "compute"
    copy = Op("offload/fetch_block", "attention", h2d=block * row, d2h=pairs * fraction * row,
              hbm_write=block * row, launches=np.where(np.asarray(block) > 0, launches, 0.0),
              stream=stream)
    rows = Op("offload/gather_rows", "attention", h2d=gathered * row, hbm_write=gathered * row,
              launches=np.where(np.asarray(gathered) > 0, launches, 0.0), access="gather",
              link_row_bytes=model.head_dim * kv_wl.b_kv)
    moved = pairs * H * row
    return Cost((copy, rows), (Resident("kv_on_host", gpu=-moved, host=moved, kv=True),))


def uniform_share(picked, candidates, H):
    """Expected rows below H among ``picked`` drawn evenly from the ``candidates`` oldest."""
    candidates = np.maximum(np.asarray(candidates, dtype=float), 1.0)
    return picked * np.minimum(H, candidates) / candidates
