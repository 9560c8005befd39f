"""Fit a profile's memory-efficiency curve and launch floor to measured step latencies.

Least squares on log(predicted / measured) (scipy.optimize.least_squares) over the efficiency
at the curve's knots and the launch overhead. The costs do not depend on the efficiencies, so
each configuration's Cost is built once and only the roofline is re-evaluated per iteration.
A stable hash of each configuration holds out a fraction of them; the fitted profile records
which file, which configurations were held out, and the date.
"""
from __future__ import annotations

import datetime
import hashlib
import json

import numpy as np

from .errors import KvsimError
from .hardware import HardwareProfile, load_profile
from .roofline import step_time
from .validate import predict_record, step_context

KNOTS = (1e5, 1e6, 1e7, 1e8, 1e9, 1e10)  # bytes moved by one kernel


def config_key(record: dict) -> str:
    fields = {k: record.get(k) for k in ("model", "n_layers", "method", "params", "batch", "seq", "dtype", "kv_dtype")}
    return json.dumps(fields, sort_keys=True)


def is_held_out(record: dict, fraction: float) -> bool:
    digest = hashlib.sha256(config_key(record).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _costs(records: list[dict], hw: HardwareProfile) -> list:
    """Each record's step Cost at the context it timed (built once: the fit only re-times it)."""
    return [predict_record(rec, hw, seq=step_context(rec)).cost for rec in records]


def with_fit(hw: HardwareProfile, effs, launch_s: float, note: str) -> HardwareProfile:
    data = hw.model_dump()
    data["memory"]["efficiency"] = {"points": [[k, float(e)] for k, e in zip(KNOTS, effs)],
                                    "source": f"fitted: {note}"}
    data["launch_overhead_s"] = {"value": float(launch_s), "source": f"fitted: {note}"}
    return HardwareProfile.model_validate(data)


def physical(params) -> np.ndarray:
    """Knot efficiencies that keep a kernel's time non-decreasing in the bytes it moves: the
    efficiency never falls with size (bigger kernels are never slower per byte), and between
    knots a and b (interpolated in log size) it grows at most (1 + ln(b/a))-fold, where
    bytes / efficiency would start to fall."""
    effs = np.maximum.accumulate(np.clip(np.asarray(params, dtype=float), 1e-3, 1.0))
    for i in range(1, len(effs)):
        effs[i] = min(effs[i], effs[i - 1] * (1.0 + np.log(KNOTS[i] / KNOTS[i - 1])))
    return effs


def _residuals(params, hw, costs, measured):
    effs = physical(params[:-1])
    trial = with_fit(hw, effs, params[-1] * 1e-6, "trial")
    predicted = np.array([float(step_time(c, trial).latency_s) for c in costs])
    return np.log(predicted / measured)


def fit(records: list[dict], hw: str | HardwareProfile, source_files: list[str], holdout: float = 0.3):
    """-> (calibrated profile, training records, held-out records)."""
    from scipy.optimize import least_squares

    hw = load_profile(hw)
    measured = [r for r in records if r.get("source") == "measured" and r.get("latency_s")]
    train = [r for r in measured if not is_held_out(r, holdout)]
    held = [r for r in measured if is_held_out(r, holdout)]
    if len(train) < len(KNOTS) + 1:
        raise KvsimError(f"calibration needs at least {len(KNOTS) + 1} measured configurations, got {len(train)}")
    costs = _costs(train, hw)
    start = np.r_[hw.memory.efficiency.at(np.array(KNOTS)), hw.launch_overhead_s.value * 1e6]
    lower, upper = np.r_[[1e-3] * len(KNOTS), 0.5], np.r_[[1.0] * len(KNOTS), 50.0]
    result = least_squares(_residuals, np.clip(start, lower, upper), bounds=(lower, upper),
                           args=(hw, costs, np.array([r["latency_s"] for r in train])), x_scale="jac")
    effs = physical(result.x[:-1])
    note = (f"{datetime.date.today().isoformat()}, kvsim calibrate on {', '.join(source_files)}: "
            f"least squares in log space over {len(train)} configurations")
    data = with_fit(hw, effs, result.x[-1] * 1e-6, note).model_dump()
    data["name"] = f"{hw.name}.calibrated"
    data["aliases"] = []
    data["calibration"] = {"measurements": list(source_files), "date": datetime.date.today().isoformat(),
                           "method": "scipy.optimize.least_squares on log(predicted/measured step latency); "
                                     "memory efficiency at knots " + ", ".join(f"{k:.0e}" for k in KNOTS)
                                     + " bytes per kernel, and the launch overhead",
                           "held_out": f"{len(held)} of {len(measured)} configurations, chosen by "
                                       f"sha256(configuration) < {holdout} (kvsim.calibrate.is_held_out)"}
    return HardwareProfile.model_validate(data), train, held
