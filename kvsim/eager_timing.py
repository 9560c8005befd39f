"""What the runtime's eager timings measure, from kvsim's eager engine (kvsim.roofline).

The engine predicts an eager call that starts on an idle GPU, as a decode loop that reads its
token back each step runs. The measurement harness (runtime/measure.py ``_time_steps``) times
attention-only and step calls in turn with no sync between them, each after an L2 flush (a write
of ``l2_flush_bytes``) outside its CUDA events. Its start event fires when the GPU reaches it, so
the host issues a call's first ops while the GPU still runs the flush and whatever the previous
call left queued: a head start of

    d = flush time + max(0, GPU end − host end of the previous call, less host work in between)

and the call measures max(its GPU time, eager time − d) (the eager time being the largest of
host prefix + GPU suffix, less d where the host is ahead). Between a step and the next
attention-only call the host runs the clock probe (``eager.host_probe_s`` × PROBE_CALLS).
A call that syncs the host on the device gets no head start past its first sync: none is given.
"""
from __future__ import annotations

import numpy as np

from .cost import Op
from .roofline import op_time, step_time

PROBE_CALLS = 64  # runtime/launches.py PROBE_CALLS: tiny torch calls per host-clock probe


def _gpu_time(timing) -> np.ndarray:
    """The call's kernels back to back (its graphs time) on its compute and copy streams."""
    compute = sum((t.time_s for t in timing.ops if t.op.stream == "compute"), np.asarray(0.0))
    copy = sum((t.time_s for t in timing.ops if t.op.stream != "compute"), np.asarray(0.0))
    return np.maximum(compute, copy)


def _syncs(cost) -> bool:
    return any(np.any(np.asarray(op.host_syncs, dtype=float) > 0) for op in cost.ops)


def flush_time(record: dict, hw) -> float:
    """GPU seconds of the harness's L2 flush (a zero_ write of ``l2_flush_bytes``)."""
    nbytes = float(record.get("l2_flush_bytes") or 0.0)
    return float(op_time(Op("l2_flush", "elementwise", hbm_write=nbytes), hw).time_s) if nbytes else 0.0


def as_timed(pred, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(step, attention-only) latency as the harness times them, from an eager prediction."""
    layers = pred.model.n_layers
    step, attn = pred.timing, step_time(pred.cost.attention(), pred.hw, "eager", layers)
    flush = flush_time(record, pred.hw)
    probe = PROBE_CALLS * float((record.get("eager") or {}).get("host_probe_s") or 0.0)
    lead_step = flush + np.maximum(0.0, attn.latency_s - attn.host_s)
    lead_attn = flush + np.maximum(0.0, step.latency_s - step.host_s - probe)
    timed = []
    for timing, lead, cost in ((step, lead_step, pred.cost), (attn, lead_attn, pred.cost.attention())):
        lead = 0.0 if _syncs(cost) else lead
        timed.append(np.maximum(_gpu_time(timing), timing.latency_s - lead))
    return timed[0], timed[1]
