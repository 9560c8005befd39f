"""The eager engine's host side: what issuing one op costs the host (its calls of each kind,
the runtime's Python around them, Triton arguments, syncs; the profile's ``host`` fields), and a
profile moved to the host clock a record was measured at (``host.probe_s``)."""
from __future__ import annotations

import numpy as np

from .cost import Op
from .errors import KvsimError
from .hardware import HardwareProfile


def host_issue_time(op: Op, hw: HardwareProfile):
    """Host time to issue one op eagerly: its calls of each kind at ``host.launch_s`` plus the
    runtime's own Python around each torch call and Triton launch (``host.python_s``), its
    Triton launches' arguments at
    ``host.triton_arg_s``, and its syncs at ``host.sync_s``."""
    host = hw.host
    if host is None or host.launch_s is None or host.sync_s is None:
        raise KvsimError(f"{hw.name}: the eager engine needs the profile's host.launch_s and "
                         "host.sync_s (the measured host cost of a launch and a sync)")
    total = np.asarray(op.host_syncs, dtype=float) * host.sync_s.value
    if host.triton_arg_s is not None:
        total = total + np.asarray(op.triton_args, dtype=float) * host.triton_arg_s.value
    python = {k: v.value for k, v in (host.python_s or {}).items()}
    for kind, calls in op.host_calls.items():
        if kind in host.launch_s:
            glue = python.get("triton" if kind == "triton" else "torch", 0.0)
            total = total + np.asarray(calls, dtype=float) * (host.launch_s[kind].value + glue)
        elif np.any(np.asarray(calls) > 0):
            raise KvsimError(f"{hw.name}: host.launch_s has no '{kind}' entry for op {op.name}")
    return total


def at_host_probe(hw: HardwareProfile, probe_s: float) -> HardwareProfile:
    """``hw`` on a host whose clock probe (``host.probe_s``: seconds per tiny torch call) read
    ``probe_s``: every host cost scaled by probe_s / host.probe_s (host work is CPU work; a
    busier or slower-clocked host does all of it proportionally slower). Unchanged where the
    profile has no probe or ``probe_s`` is 0 or None (no probe read); anything but seconds per
    call in [0, 1) is refused in one line.

    One probe cannot tell a slower host from a per-call cost added to CUDA calls only: in a
    process where torch.profiler has run (the harness's GPU busy time, from the second
    configuration of a process on), the probe reads ~8.3 us against ~6.1 in a fresh process,
    and the committed H100 steps timed there come out 5-16% over (fresh-process ones within
    ±4%). Moving only the bare calls (not the runtime's Python) by the probe, or adding the
    probe's rise per call, gave larger errors on those records (under by 6-13%), so all of it
    scales."""
    if isinstance(probe_s, bool) or not isinstance(probe_s or 0.0, (int, float)) or not 0 <= (probe_s or 0.0) < 1:
        raise KvsimError(f"host_probe_s must be seconds per call in [0, 1), got {probe_s!r}")
    host = hw.host
    if host is None or host.probe_s is None or host.probe_s.value <= 0 or not probe_s:
        return hw
    ratio = float(probe_s) / host.probe_s.value
    scaled = lambda f: None if f is None else f.model_copy(update={"value": f.value * ratio})  # noqa: E731
    update = {name: scaled(getattr(host, name)) for name in ("triton_arg_s", "sync_s")}
    for name in ("launch_s", "python_s"):
        update[name] = None if getattr(host, name) is None else {k: scaled(v) for k, v in getattr(host, name).items()}
    update["probe_s"] = host.probe_s.model_copy(update={"value": float(probe_s)})
    return hw.model_copy(update={"host": host.model_copy(update=update)})
