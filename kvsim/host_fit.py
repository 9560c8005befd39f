"""The eager engine's host costs from benchmarks/bench_host.py records, each kind identified by a
burst of its own (not a regression over the runtime's calls, whose kinds rise together):

- ``host call`` records, one per call kind: host seconds per call of a burst of bare calls of that
  kind (a torch op that launches a kernel, a cuBLAS product, a view or allocation, ``.item()``,
  Triton launches with n runtime arguments for several n);
- ``runtime launch`` records: the runtime's own step and attention-only calls, host-bound, with
  what they issue counted by kind (runtime/launches.py LaunchCounter);
- every record carries the host-clock probe taken beside it (``probe_s``, runtime/launches.py
  host_probe); each time is moved to the run's median probe before fitting.

Fields: ``launch_s`` per kind (medians of its bursts), Triton's per-launch and per-argument cost
(a line through the n-argument bursts), ``sync_s`` (an ``.item()`` less its torch call),
``python_s``: the runtime's own Python per torch call and per Triton launch (what the bare
costs leave of the runtime's calls, least squares), and ``probe_s``.
"""
from __future__ import annotations

import numpy as np

TORCH_KINDS = ("torch", "torch_gemm", "torch_host")
CALL_KINDS = TORCH_KINDS + ("triton",)


def _normalised(records, probe: float) -> np.ndarray:
    """Host seconds per call of each record at the host clock ``probe``."""
    return np.array([r["host_s"] * (probe / r["probe_s"] if r.get("probe_s") else 1.0) for r in records])


def bare_costs(records) -> dict:
    """{kind: seconds} of bare calls, plus "triton_arg" and "sync", at the records' median probe."""
    calls = [r for r in records if r.get("kind") == "host call"]
    probe = float(np.median([r["probe_s"] for r in records if r.get("probe_s")] or [1.0]))
    times = _normalised(calls, probe)
    cost = {k: float(np.median([t for r, t in zip(calls, times) if r["call"] == k])) for k in TORCH_KINDS}
    triton = [(r["args"], t) for r, t in zip(calls, times) if r["call"] == "triton"]
    if len({n for n, _ in triton}) < 2:
        raise ValueError("the Triton launch cost needs bursts at two or more argument counts")
    slope, intercept = np.polyfit(*np.array(triton, dtype=float).T, 1)
    cost["triton"], cost["triton_arg"] = max(float(intercept), 0.0), max(float(slope), 0.0)
    item = np.median([t for r, t in zip(calls, times) if r["call"] == "sync"])
    cost["sync"] = max(float(item) - cost["torch"], 0.0)
    cost["probe"] = probe
    return cost


def bare_time(counts: dict, cost: dict):
    """Host seconds of what a call issues (runtime/launches.py counts) at bare costs."""
    return (sum(counts.get(k, 0) * cost[k] for k in CALL_KINDS) + counts.get("triton_args", 0) * cost["triton_arg"]
            + counts.get("sync", 0) * cost["sync"])


def _nonnegative(a: np.ndarray, b: np.ndarray) -> tuple[float, ...]:
    """Least squares a·x ≈ b over x ≥ 0 for two unknowns: the best of the free solution (if it
    is non-negative) and each unknown alone (the other at 0)."""
    candidates = [np.linalg.lstsq(a, b, rcond=None)[0]]
    for keep in range(a.shape[1]):
        x = np.zeros(a.shape[1])
        column = a[:, keep]
        x[keep] = max(float(column @ b) / max(float(column @ column), 1e-300), 0.0)
        candidates.append(x)
    feasible = [x for x in candidates if np.all(x >= 0)]
    best = min(feasible, key=lambda x: float(np.sum((a @ x - b) ** 2)))
    return tuple(float(v) for v in best)


def host_fit(records) -> dict:
    """The host fields (seconds) and the runtime calls' relative residuals under them. The
    runtime's Python per torch call and per Triton launch: non-negative least squares, in relative
    terms, of what the bare costs leave of each runtime call on its torch calls and its Triton
    launches (its steps issue mostly torch calls, its attention-only calls mostly Triton ones)."""
    cost = bare_costs(records)
    runtime = [r for r in records if r.get("kind") == "runtime launch"]
    if not runtime:
        raise ValueError("the runtime's Python per call needs its own calls (runtime launch records)")
    times = _normalised(runtime, cost["probe"])
    bare = np.array([bare_time(r["counts"], cost) for r in runtime])
    calls = np.array([[sum(r["counts"].get(k, 0) for k in TORCH_KINDS), r["counts"].get("triton", 0)]
                      for r in runtime], dtype=float)
    cost["python_torch"], cost["python_triton"] = _nonnegative(calls / times[:, None], (times - bare) / times)
    modelled = bare + calls @ np.array([cost["python_torch"], cost["python_triton"]])
    cost["residuals"] = (modelled / times - 1).tolist()
    return cost


def profile_fields(cost: dict, note: str) -> dict:
    """Dotted profile paths -> values (kvsim.calibrate.patch_profile_text) with ``note`` as source."""
    src = lambda value, what: {"value": float(f"{value:.4g}"), "source": f"{note}: {what}"}  # noqa: E731
    python = "the runtime's own Python per {} beyond the bare call: non-negative least squares over its step and attention-only calls"
    return {"host.launch_s": {k: src(cost[k], f"bare {k} call") for k in CALL_KINDS},
            "host.triton_arg_s": src(cost["triton_arg"], "per runtime argument of a Triton launch (slope over bursts at several argument counts)"),
            "host.sync_s": src(cost["sync"], ".item() on an idle device less its torch call"),
            "host.python_s": {"torch": src(cost["python_torch"], python.format("torch call")),
                              "triton": src(cost["python_triton"], python.format("Triton launch (its wrapper)"))},
            "host.probe_s": src(cost["probe"], "host-clock probe (runtime/launches.py host_probe) the costs are at: median over the run")}
