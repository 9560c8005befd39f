"""What the runtime's eager timings measure, from kvsim's eager engine (kvsim.roofline).

The engine predicts an eager call that starts on an idle GPU, as a decode loop that reads its
token back each step runs. The measurement harness (runtime/measure.py ``_time_steps``) times
pairs of calls, [host-clock probe], attention-only, step, each after an L2 flush (a write of
``l2_flush_bytes``) outside its CUDA events, with no sync between them. The start event fires
once the GPU has run the flush and whatever the call before left queued (its backlog), while
the host has been issuing the call's ops since it issued the flush: a head start h. The call
measures max(its GPU time, eager time − h), and leaves a backlog of h + measured − its host
issue time (what the GPU still runs after the host is done issuing). h is the flush time plus
the backlog of the call before, less the host time between them: the probe
(``eager.host_probe_s`` × PROBE_CALLS host seconds, where the record has one) before each
attention-only call, nothing before the step. The pair repeats in steady state (after warm-up
pairs of the same shape), so each call's head start is found from the other's backlog by
iterating to the fixed point.

A call that syncs the host on the device gets no head start past its first sync (none is given)
and leaves no backlog the model counts.
"""
from __future__ import annotations

import numpy as np

from .cost import Op
from .roofline import op_time, step_time

PROBE_CALLS = 64  # runtime/launches.py PROBE_CALLS: tiny torch calls per host-clock probe
ROUNDS = 8  # fixed-point iterations of the pair's head starts (each backlog a contraction)


def _gpu_time(timing) -> np.ndarray:
    """The call's kernels back to back (its graphs time) on its compute and copy streams."""
    compute = sum((t.time_s for t in timing.ops if t.op.stream == "compute"), np.asarray(0.0))
    return np.maximum(compute, timing.copy_stream_s)


def _syncs(cost) -> bool:
    return any(np.any(np.asarray(op.host_syncs, dtype=float) > 0) for op in cost.ops)


def flush_time(record: dict, hw) -> float:
    """GPU seconds of the harness's L2 flush (a zero_ write of ``l2_flush_bytes``)."""
    nbytes = float(record.get("l2_flush_bytes") or 0.0)
    return float(op_time(Op("l2_flush", "elementwise", hbm_write=nbytes), hw).time_s) if nbytes else 0.0


def probe_time(record: dict) -> float:
    """Host seconds of the harness's host-clock probe before each attention-only call (0 for
    records timed before the harness took one)."""
    return PROBE_CALLS * float((record.get("eager") or {}).get("host_probe_s") or 0.0)


class _Call:
    """One timed call: its GPU time, eager latency from an idle GPU and host issue time."""

    def __init__(self, timing, cost):
        self.gpu, self.latency = _gpu_time(timing), np.asarray(timing.latency_s, dtype=float)
        self.host, self.syncs = np.asarray(timing.host_s, dtype=float), _syncs(cost)

    def timed(self, head):
        return self.latency if self.syncs else np.maximum(self.gpu, self.latency - head)

    def backlog(self, head):
        """GPU seconds still queued when the host has issued the whole call."""
        return 0.0 * head if self.syncs else np.maximum(head + self.timed(head) - self.host, 0.0)


def as_timed(pred, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(step, attention-only) latency as the harness times them, from an eager prediction."""
    attn_cost = pred.cost.attention()
    step = _Call(pred.timing, pred.cost)
    attn = _Call(step_time(attn_cost, pred.hw, "eager", pred.model.n_layers), attn_cost)
    flush, probe = flush_time(record, pred.hw), probe_time(record)
    step_head = attn_head = np.asarray(flush)
    for _ in range(ROUNDS):
        attn_head = flush + np.maximum(step.backlog(step_head) - probe, 0.0)
        step_head = flush + attn.backlog(attn_head)
    return step.timed(step_head), attn.timed(attn_head)
