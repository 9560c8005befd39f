"""An executed schedule's run (runtime/schedule_exec.py ``generate``) as a record."""
from __future__ import annotations

import datetime

from .environment import device_name, versions
from .model import DTYPE_NAMES


def record(policy: str, pred: dict, run: dict, gpu_mem, device) -> dict:
    """The run in kvsim's record schema (``kind: schedule``; kvsim validate compares it with
    kvsim.schedule.executed.prediction for the same hw, model, layers, batch, prompt, gen, gpu_mem)."""
    steps, method = run["steps"], run["method"]
    decode = steps[1:]
    plan = pred["alisa"] if policy == "alisa" else pred["flexgen"]
    keep = ("p1", "p2", "alpha", "beta", "weights_gpu") if policy == "alisa" else ("kv_gpu", "weights_gpu")
    return {"source": "measured", "kind": "schedule", "policy": policy, "hw": pred["hw"], "model": pred["model"],
            "n_layers": pred["n_layers"], "method": "alisa" if policy == "alisa" else "dense",
            "params": pred["params"] if policy == "alisa" else {}, "batch": pred["batch"], "seq": pred["prompt"],
            "prompt": pred["prompt"], "gen": len(decode), "dtype": DTYPE_NAMES[run["decoder"].dtype],
            "kv_dtype": DTYPE_NAMES[run["decoder"].dtype], "gpu_mem_bytes": gpu_mem, "schedule_params": pred["params"],
            "plan": {k: plan[k] for k in keep}, "steps": steps,
            "total_s": sum(s["latency_s"] for s in steps), "prefill_s": steps[0]["latency_s"],
            "prefill_sequences": run["prefill_sequences"],
            "peak_memory_bytes": max(s["peak_bytes"] for s in decode), "prefill_peak_bytes": steps[0]["peak_bytes"],
            "memory_how": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "weights + cache tensor sizes",
            "h2d_bytes": sum(s["h2d"] for s in steps), "d2h_bytes": sum(s["d2h"] for s in steps),
            "pcie_bytes": sum(s["h2d"] + s["d2h"] for s in steps),
            "recompute_s": sum(s.get("recompute_s", 0.0) for s in steps), "kv_bytes": method.device_bytes,
            "host_kv_bytes": method.host_bytes, "device": device_name(device), **versions(),
            "host_probe_s": run.get("host_probe_s"),
            "timer": "eager, CUDA events per step" if device.type == "cuda" else "eager, wall clock",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
