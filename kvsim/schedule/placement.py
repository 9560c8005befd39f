"""ALISA's three-phase KV placement (arXiv 2403.17312 Algorithm 2): where each step's rows are,
and the GPU and CPU bytes it holds (the schedule's own ops at every step: ``ops.py``).

A placement is (p1, p2, α, β, w). Tokens are numbered by age: the prompt's P tokens first, then one
per decode step; at step j the cache holds N_j of them, the newest ``recent_j`` always on the GPU.
  Phase I   (j < p1): every token's K and V on the GPU.
  Phase II  (j >= p1): a fraction α of each token made at step >= p1 (p1 = 0: the prompt's too)
            goes to CPU memory once it leaves the recent window, and is loaded back over PCIe
            when selected.
  Phase III (j >= p2 >= p1): the oldest d_j = β·N_j tokens (never the recent window) have
            their K and V deleted (p2 = 0: as prefill writes them); when selected they are
            recomputed on the GPU.
  w: the fraction of every layer's weights kept on the GPU; the rest streams over PCIe each
     step into a two-layer buffer, overlapped with compute (as FlexGen does, §4.3, whose
     GPU working set holds 2·(1−wg) layers of weights).
p1 or p2 = G + 1 means the phase never starts.

Assumptions (the paper gives no equations; unverified against its code):
  * selection: the recent window is read every step; the other selected rows (ALISA's global
    top-k) fall uniformly on the older tokens, so a share (CPU tokens)/(older tokens) of them is
    loaded and a share (deleted)/(older) recomputed. Real attention favours a few old tokens
    (attention sinks), which the oldest-first deletion would then recompute more often.
  * recomputation re-projects K and V from the token's layer inputs x (D·b_a bytes per layer,
    eta per token), which the plan keeps, from the token's creation on, for the tokens it will
    delete (known offline: the oldest β·N_G), beside the token's K and V and in the same memory;
    a deleted CPU token's x crosses PCIe when selected. Per selected row and layer: 2·2·D·KV
    FLOPs (K and V), reading x (D·b_a) and the K/V projection weights 2·D·KV·b_w once per layer.
  * loads land in a two-layer GPU buffer (2/L of a step's loaded bytes); one layer's
    recomputation's temporaries (x, its norm, the K/V projection) are scratch.
  * the executor recomputes min(selected older rows, deleted) list entries per sequence and
    layer, masking those not deleted, so that no step waits on the host for a count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inputs import StepInputs


@dataclass(frozen=True)
class Placement:
    p1: int
    p2: int
    alpha: float
    beta: float
    weights_gpu: float = 1.0


@dataclass(frozen=True)
class Geometry:
    """Token counts per sequence at every step (arrays broadcast to (plans, steps)); the
    quantities multiplied by α are those that move with the CPU share."""

    n: np.ndarray  # (steps,): tokens held, N_j
    old: np.ndarray  # (steps,): tokens older than the recent window, N_j − recent_j
    share: np.ndarray  # (steps,): selected older rows / older tokens
    start: np.ndarray  # (plans, 1): first Phase-II token, N_{p1-1}
    last: np.ndarray  # (plans, 1): the tokens older than this are deleted by the end
    deleted: np.ndarray  # d_j
    offloadable: np.ndarray  # m_j: live Phase-II tokens outside the recent window

    @property
    def x_held(self):  # tokens whose layer inputs are kept (deleted or to be deleted)
        return np.minimum(self.last, self.n)

    @property
    def x_offloadable(self):  # Phase-II tokens outside the window whose x is kept
        return np.maximum(np.minimum(self.last, self.old) - self.start, 0.0)

    @property
    def load_rows(self):  # selected rows that would be on the CPU, per unit α
        return self.share * self.offloadable

    @property
    def load_x_rows(self):  # selected deleted rows whose x would be on the CPU, per unit α
        return self.share * np.maximum(self.deleted - self.start, 0.0)

    @property
    def recompute_rows(self):
        """List entries recomputed per sequence and layer: the executor's host-known bound
        min(selected older rows, deleted), the entries not deleted masked (no host sync;
        runtime/schedule_exec.py ``recompute_bound``), not the expected share·deleted."""
        return np.minimum(self.share * self.old, self.deleted)

    def subset(self, keep: np.ndarray) -> "Geometry":
        """The plans where ``keep`` holds."""
        rows = lambda v: np.broadcast_to(v, (len(keep), v.shape[-1]))[keep]  # noqa: E731
        return Geometry(self.n, self.old, self.share, rows(self.start), rows(self.last),
                        rows(self.deleted), rows(self.offloadable))


def geometry(inp: StepInputs, p1, p2, beta) -> Geometry:
    """``p1``, ``p2``, ``beta``: arrays of shape (plans, 1)."""
    N, old = inp.n, inp.n - inp.recent
    start = np.concatenate([[0.0], N])[np.asarray(p1, dtype=int)]  # first Phase-II token: N_{p1-1}
    deleted = np.where(np.arange(inp.steps) >= p2, np.clip(beta * N, 0.0, old), 0.0)
    offloadable = np.maximum(old - np.maximum(start, deleted), 0.0)
    share = np.divide(inp.global_sel, old, out=np.zeros_like(old), where=old > 0)
    return Geometry(N, old, share, start, deleted[..., -1:], deleted, offloadable)


def new_offloads(inp: StepInputs, geo: Geometry):
    """Tokens (and kept x) leaving the recent window this step into the CPU share, per unit α:
    the window edge moved from old_{j-1} to old_j; the tokens past it that are Phase-II and live.
    A token's x is kept where its position is below ⌊last⌋ (executed.token_plan's ``last``)."""
    old = geo.old
    before = np.concatenate([[0.0], old[:-1]])
    rows = np.maximum(old - np.maximum(before, np.maximum(geo.start, geo.deleted)), 0.0)
    x_rows = np.maximum(np.minimum(old, np.floor(geo.last + 1e-9)) - np.maximum(before, geo.start), 0.0)
    return rows, x_rows


def gpu_bytes_linear(inp: StepInputs, geo: Geometry, weights_gpu):
    """GPU bytes at every step as U − α·V (both arrays): the α-share leaves for CPU memory."""
    L = inp.model.n_layers
    # weights: w·W resident + a 2-layer buffer for the streamed (1 − w) share (FlexGen §4.3)
    weights = weights_gpu * inp.weights + 2.0 * (1.0 - weights_gpu) * inp.layer_weights
    base = weights + inp.fixed_gpu + inp.meta_gpu + inp.rho * inp.n
    # K/V of deleted tokens freed, their x kept; one layer's recomputation's temporaries
    U = (base + inp.eta * geo.x_held - inp.rho * geo.deleted + _recompute_temporaries(inp, geo)
         + _gathered_rows_bytes(inp, geo))
    # the α-share: its K/V and x leave; the x rows a recomputation loads land in a 2-layer buffer
    V = inp.rho * geo.offloadable + inp.eta * geo.x_offloadable - (2.0 / L * inp.eta) * geo.load_x_rows
    return U, V


def _gathered_rows_bytes(inp: StepInputs, geo: Geometry):
    """Once rows can be on the host or deleted, a layer reads its selected rows (recent and
    global, GPU rows too) from a compact copy, gathered while the layer before runs: two layers'
    copies at a time, 2/L of ρ per selected row (runtime/schedule_store.py ``prefetch_rows``).
    Charged wherever the plan offloads or deletes at that step, even at α = 0 (then an over-count:
    the runtime reads the GPU pool in place)."""
    copied = (geo.offloadable > 0) | (geo.deleted > 0)
    return 2.0 / inp.model.n_layers * inp.rho * (inp.recent + inp.global_sel) * copied


def _recompute_temporaries(inp: StepInputs, geo: Geometry):
    """One layer's recomputation at its peak, per recomputed entry (runtime/schedule_store.py
    ``_recompute``, all b_a wide): the gathered x pieces and their [R, D] copy, then either the
    norm's output and the K/V projection (3·D + 2·KV) or the projection, RoPE's rotated keys and
    one masked write's output (2·D + 3·KV, + KV with RoPE)."""
    D, KV = inp.model.d_model, inp.model.kv_dim
    rope = 0.0 if inp.model.learned_positions else KV
    per_row = max(3 * D + 2 * KV, 2 * D + 3 * KV + rope) * inp.wl.b_a
    return inp.batch * geo.recompute_rows * per_row


def cpu_bytes_linear(inp: StepInputs, geo: Geometry, weights_gpu):
    """CPU bytes as C0 + α·C1: streamed weights, the method's host residents, the CPU share."""
    C0 = (1.0 - weights_gpu) * inp.weights + inp.host_resident
    C1 = inp.rho * geo.offloadable + inp.eta * geo.x_offloadable
    return C0 + np.zeros_like(C1), C1
