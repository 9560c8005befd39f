"""Decode with the oldest part of the KV cache in pinned host memory, the way the reference
runtime does it (runtime/offload.py; ALISA Phase II, arXiv 2403.17312 §4.3; FlexGen's CPU
placement, arXiv 2303.06865 §4). Fraction f: of each layer's S tokens (the new one included)
the oldest H = min(⌊f·S⌋, S − 1) live on the host; the rest, and always the new token, on the GPU.

Per decode step, summed over layers, with ρ = one row's K and V for one KV head (kv_row_bytes):
  h2d   ρ per row the method reads below H, fetched when its layer attends (no prefetch: the
        rows are known only then), on the compute stream
  d2h   f·ρ per (sequence, KV head): rows the boundary passes move to the host (⌊f·(S+1)⌋ −
        ⌊f·S⌋ rows a step, f on average), + 4 B per *gathered* row (int32 positions sent to
        the host to plan the fetch)
  host  gathered rows collected in host memory (read and written once, 2·ρ each) before the
        copy; a layer that reads every row takes the block [0, H) in one contiguous copy
  HBM   the fetched rows written into a compact device buffer that attention then reads (ρ each)
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

POSITION_BYTES = 4.0  # int32 position of each fetched row, sent to the host


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
    """The transfers, host gather and memory move of one decode step (module doc)."""
    H = host_rows(wl, fraction)
    row = method.row_bytes(model, wl)
    block, gathered = (wl.batch * rows for rows in method.host_rows_read(model, wl, H))
    fetched = block + gathered  # rows, all layers and lists
    pairs = model.n_layers * wl.batch * model.n_kv_heads
    # kind "attention": the rows are fetched inside the layer's attention, which waits for them
    fetch = Op("offload/fetch_rows", "attention", h2d=fetched * row,
               d2h=gathered * POSITION_BYTES + pairs * fraction * row, host_bytes=2 * gathered * row,
               hbm_write=fetched * row, launches=model.n_layers)
    moved = pairs * H * row
    return Cost((fetch,), (Resident("kv_on_host", gpu=-moved, host=moved, kv=True),))


def uniform_share(picked, candidates, H):
    """Expected rows below H among ``picked`` drawn evenly from the ``candidates`` oldest."""
    candidates = np.maximum(np.asarray(candidates, dtype=float), 1.0)
    return picked * np.minimum(H, candidates) / candidates
