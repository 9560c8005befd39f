"""What the runtime's eager timings measure, from kvsim's eager engine (kvsim.roofline).

The engine predicts an eager call that starts on an idle GPU, as a decode loop that reads its
token back each step runs. The measurement harness (runtime/measure.py ``_time_steps``) times
each call after an L2 flush (a write of ``l2_flush_bytes``) outside its CUDA events: the start
event fires once the GPU has run the flush, while the host has already been issuing the call's
first ops. The call measures max(its GPU time, eager time − flush time).

Not modelled: a backlog the previous call leaves on the GPU (the step's LM head still running
as the host starts the next attention-only call) would give a further head start; on the
committed H100 sweep, reading each record's host clock from its attention-only call, adding it
made the step errors worse (13.5% median against 8.4% with the flush alone), so it is left out.
A call that syncs the host on the device gets no head start past its first sync: none is given.
"""
from __future__ import annotations

import numpy as np

from .cost import Op
from .roofline import op_time, step_time


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


def as_timed(pred, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(step, attention-only) latency as the harness times them, from an eager prediction."""
    attn = step_time(pred.cost.attention(), pred.hw, "eager", pred.model.n_layers)
    flush = flush_time(record, pred.hw)
    return tuple(np.maximum(_gpu_time(timing), timing.latency_s - (0.0 if _syncs(cost) else flush))
                 for timing, cost in ((pred.timing, pred.cost), (attn, pred.cost.attention())))
