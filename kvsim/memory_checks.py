"""kvsim's largest batch and allocation against the runtime's max-batch runs
(benchmarks/bench_memory.py's ``kind: max_batch`` records)."""
from __future__ import annotations

import numpy as np

from .predict import predict
from .validate import model_for, record_profile


def max_batch_checks(records: list[dict]) -> list[dict]:
    """For each ``kind: max_batch`` record (benchmarks/bench_memory.py: the largest batch the
    runtime ran and the first that ran out of memory), kvsim's largest batch that fits on the
    device's profile and its allocation error at the batch that ran."""
    from .profiles import profile_for_device
    rows = []
    for rec in (r for r in records if r.get("kind") == "max_batch"):
        name = rec.get("hw") or profile_for_device(str(rec.get("device", "")))
        if name is None:
            continue
        batches = np.arange(1, 4 * int(rec["first_oom_batch"]) + 1)
        pred = predict(record_profile(name), method=rec["method"], seq=rec["seq"], batch=batches,
                       model=model_for(rec), **(rec.get("params") or {}))
        memory = np.broadcast_to(np.asarray(pred.peak_gpu_bytes, dtype=float), batches.shape)
        fits = batches[memory <= pred.gpu_capacity_bytes]
        allocated = memory[int(rec["max_batch_ran"]) - 1] - pred.hw.workspace_bytes.value
        rows.append({"hw": name, "model": rec["model"], "method": rec["method"], "seq": rec["seq"],
                     "ran": rec["max_batch_ran"], "out_of_memory": rec["first_oom_batch"],
                     "predicted": int(fits.max()) if fits.size else 0,
                     "allocation_err": (allocated - rec["peak_allocated_bytes"]) / rec["peak_allocated_bytes"]})
    return rows
