"""Prediction intervals from validation residuals, by how much of a profile was measured.

A prediction on a profile whose memory curve was measured on that device ("measured") is as
good as kvsim's error on that device's own records outside its fit (per device: devices differ
in spread, and pooling them gave the wider one too narrow an interval); one whose laws came from
another device of the same architecture ("same-architecture") as good as the leave-one-device-out
error, pooled over both directions; one from another architecture has no measurement behind it:
it gets the widest measured class's quantiles, a lower bound (the file says so). The residuals are
log(measured / predicted) step latency; the 5% and 95% quantiles give the 90% interval
latency · exp(q). They are data
(``hw_profiles/residuals/step-latency.yaml``), written by ``kvsim calibrate --intervals`` with the
records and the fit they come from.
"""
from __future__ import annotations

import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import KvsimError
from .profiles import shipped_dir
from .yamlfile import read_mapping

CLASSES = ("measured", "same-architecture", "other-architecture", "assumed")
WIDER = {"measured": "same-architecture", "same-architecture": "other-architecture",
         "other-architecture": "assumed", "assumed": None}
LEVEL = 0.90  # the interval holds this share of held-out measurements


def residuals_file() -> Path:
    return shipped_dir() / "residuals" / "step-latency.yaml"


@lru_cache(maxsize=4)
def _table(path: str) -> dict:
    file = Path(path)
    return read_mapping(file, "residual quantiles")["classes"] if file.is_file() else {}


def quantiles(trust_class: str, device: str | None = None) -> tuple[float, float, str]:
    """(q_low, q_high, class used): the device's own quantiles within its class, else the class's,
    else the nearest wider class's, else the widest any class has."""
    table = _table(str(residuals_file()))
    own = (table.get(trust_class) or {}).get("devices", {}).get(device)
    if own is not None:
        return float(own["q_low"]), float(own["q_high"]), f"{trust_class} ({device})"
    wanted = trust_class
    while wanted is not None:
        if wanted in table:
            return float(table[wanted]["q_low"]), float(table[wanted]["q_high"]), wanted
        wanted = WIDER.get(wanted)
    if not table:
        raise KvsimError(f"no residual quantiles in {residuals_file()} (run kvsim calibrate --intervals)")
    widest = max(table, key=lambda c: float(table[c]["q_high"]) - float(table[c]["q_low"]))
    return float(table[widest]["q_low"]), float(table[widest]["q_high"]), widest


def interval(latency, trust_class: str, device: str | None = None):
    """Vectorized: (low, high) arrays around ``latency`` (any shape) for a profile's trust class
    (and device: a measured device's own quantiles)."""
    q_low, q_high, _ = quantiles(trust_class, device)
    latency = np.asarray(latency, dtype=float)
    return latency * np.exp(q_low), latency * np.exp(q_high)


def scaled_interval(value, trust_class: str, inverse: bool = False, device: str | None = None):
    """The same relative interval for a quantity proportional to latency (``inverse``: to its
    reciprocal, e.g. tokens/s, or batch that fits a latency budget), vectorized."""
    low, high = interval(1.0, trust_class, device)
    value = np.asarray(value, dtype=float)
    return (value / high, value / low) if inverse else (value * low, value * high)


def max_batch_interval(batches, latency, budget_s, trust_class: str):
    """Vectorized over leading axes: the largest batch (of ``batches``, the last axis of
    ``latency``) whose step meets ``budget_s`` at the interval's slow end (low) and fast end
    (high); 0 where none does. For kvsim plan's time-per-token budget."""
    low, high = interval(latency, trust_class)
    batches = np.broadcast_to(np.asarray(batches, dtype=float), np.shape(latency))
    largest = lambda lat: np.max(np.where(lat <= budget_s, batches, 0.0), axis=-1)  # noqa: E731
    return largest(high), largest(low)


def fit_quantiles(log_ratios, level: float = LEVEL) -> dict:
    """The two-sided ``level`` quantiles of log(measured / predicted)."""
    values = np.asarray(log_ratios, dtype=float)
    if values.size < 5:
        raise KvsimError(f"residual quantiles need at least 5 records, got {values.size}")
    tail = (1.0 - level) / 2.0
    return {"q_low": float(np.quantile(values, tail)), "q_high": float(np.quantile(values, 1.0 - tail)),
            "n": int(values.size)}


def covered(measured, low, high) -> np.ndarray:
    measured = np.asarray(measured, dtype=float)
    return (measured >= np.asarray(low)) & (measured <= np.asarray(high))


def document(classes: dict, command: str) -> dict:
    return {"quantity": "step latency: log(measured / predicted); the interval is predicted x exp(q)",
            "level": LEVEL, "written": datetime.date.today().isoformat(), "command": command,
            "classes": classes}
