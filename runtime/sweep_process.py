"""How a sweep runs its configurations (issue 12): which process measures each, the memory
re-measure's grid, and re-measured records put in a sweep file in place of the old ones.

Long sweep processes ran some large graph replays 12-15% slow (StreamingLLM at llama-2-7b
64k x 32 and 128k x 8 on the H100) that matched kvsim in a process of their own, and a replay
slower than its own eager step is that process state, never the step: such a configuration is
measured again by ``kvsim measure`` in a fresh process (benchmarks/measure_sweep.py).
"""
from __future__ import annotations

import json
import subprocess
import sys

from kvsim.calibrate import config_key
from kvsim.errors import KvsimError

MEMORY_CASES = [  # (model, layers, context, batch): peak allocation of every method, 4-8 layers
    ("llama-3.1-8b", 8, 16384, 8), ("llama-2-7b", 4, 65536, 4), ("llama-2-13b", 4, 49152, 4),
    ("opt-6.7b", 8, 8192, 16), ("llama-3.1-70b", 4, 98304, 2)]


def cut_model_params(method: str, layers: int) -> dict:
    """TidalDecode re-selects at layer 13 of 32; a model cut to fewer layers re-selects at the
    same relative depth (at least layer 3, after the selection layer 2)."""
    if method == "tidaldecode" and layers < 14:
        return {"reselect_layer": max(3, round(13 * layers / 32))}
    return {}


def memory_grid(methods):
    """Every method at one configuration of each model (issue 12: kvsim's memory against the
    runtime's peak allocation, re-measured with stale cuBLAS workspaces freed)."""
    for model, layers, seq, batch in MEMORY_CASES:
        for method in methods:
            yield {"method": method, "seq": seq, "batch": batch, "model": model, "layers": layers,
                   "params": cut_model_params(method, layers)}


def slow_replay(record: dict) -> bool:
    """A graph replay slower than the same step issued eagerly: the replay runs the same kernels
    without the host's launch gaps, so this is the process's state, not the step."""
    eager = (record.get("eager") or {}).get("latency_s")
    return "graph" in str(record.get("timer", "")) and bool(eager) and record["latency_s"] > eager


def remeasured(args, config, layers, hw, out, record: dict) -> dict:
    """The configuration again in a fresh process; its record, noting the in-sweep times."""
    again = fresh_record(args, config, layers, hw, out)
    if again.get("source") != "measured":
        return record
    again["in_sweep"] = {"latency_s": record["latency_s"], "eager_latency_s": record["eager"]["latency_s"],
                         "why": "replay slower than the eager step inside the sweep process: re-measured fresh"}
    return again


def fresh_record(args, config, layers, hw, out) -> dict:
    """One configuration measured by ``kvsim measure`` in a process of its own: nothing an earlier
    configuration allocated, captured or cached is left (issue 12: large replays ran 12-15% slow
    late in a long sweep process, and matched kvsim in a fresh one)."""
    params = [part for k, v in config["params"].items() for part in ("--param", f"{k}={v}")]
    params += ["--offload", str(config["offload"])] if config["offload"] else []
    command = [sys.executable, "-m", "kvsim", "measure", *params, "--method", config["method"], "--seq",
               str(config["seq"]), "--batch", str(config["batch"]), "--model", config["model"], "--layers",
               str(layers), "--steps", str(args.steps), "--warmup", str(args.warmup), "--hw", hw, "--no-ncu"]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"source": "failed", **config, "n_layers": layers, "error": (done.stderr or done.stdout)[-300:]}
    return {**json.loads(lines[-1]), "process": "fresh"}


def replaced(sweep: list[dict], new: list[dict]) -> list[dict]:
    """``sweep`` with each measured record of ``new`` in place of the one of the same configuration
    (kvsim.calibrate.config_key), the replaced one's times kept under ``replaced``; a new record
    whose configuration the sweep lacks is refused."""
    fresh = {config_key(r): r for r in new if r.get("source") == "measured"}
    keys = {config_key(r) for r in sweep if r.get("source") == "measured"}
    missing = [k for k in fresh if k not in keys]
    if missing:
        raise KvsimError(f"{len(missing)} new records have no configuration in the sweep, e.g. {missing[0]}")
    out = []
    for record in sweep:
        new_one = fresh.get(config_key(record)) if record.get("source") == "measured" else None
        if new_one is None:
            out.append(record)
            continue
        old = {"latency_s": record.get("latency_s"), "eager_latency_s": (record.get("eager") or {}).get("latency_s"),
               "date": record.get("date"), "process": record.get("process", "the sweep's")}
        out.append({**new_one, "replaced": old})
    return out
