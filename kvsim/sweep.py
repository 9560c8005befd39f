"""Sweeps: predictions over a grid of context × batch for every hardware × GPU count × method.

Each (hardware, GPUs, method) is one vectorized ``predict`` call over the whole context × batch
grid (``seq[:, None]`` against ``batch[None, :]``); only the three outer choices are looped. Rows
are the shared record schema (``kvsim.records``), so a sweep's CSV has the columns of
``kvsim predict --format csv`` and its JSON lines are what ``kvsim validate`` reads.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from .errors import KvsimError
from .hardware import HardwareProfile
from .profiles import list_profiles, load_profile
from .methods import METHODS
from .models import DEFAULT_MODEL
from .predict import predict
from .records import prediction_records


def gpu_profiles() -> list[HardwareProfile]:
    """Every GPU profile kvsim knows (shipped and on KVSIM_HW_PATH): what ``--hw all`` means."""
    return [p for p in list_profiles() if p.kind == "gpu"]


def method_params(method: str, params: dict | None) -> dict:
    """The parameters in ``params`` that ``method`` has: one --param set can serve many methods."""
    fields_ = METHODS[method].model_fields if method in METHODS else {}
    return {name: value for name, value in (params or {}).items() if name in fields_}


def check_params(methods: list[str], params: dict | None) -> None:
    """A parameter none of the chosen methods has is a typo, not something to drop silently."""
    for name in params or {}:
        if not any(name in METHODS[m].model_fields for m in methods if m in METHODS):
            raise KvsimError(f"parameter '{name}' belongs to none of the methods: {', '.join(methods)}")


class Progress:
    """A one-line progress bar on stderr, drawn only once the work has run longer than ``delay``
    (and never when ``enabled`` is false); a context manager that ends the line it drew."""

    def __init__(self, total: int, label: str, stream=None, delay: float = 1.0, clock=time.monotonic,
                 enabled: bool = True):
        self.total, self.label, self.done, self.enabled = max(total, 1), label, 0, enabled
        self.stream, self.delay, self.clock = stream or sys.stderr, delay, clock
        self.start, self.drawn, self.last = clock(), False, float("-inf")

    def step(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        elapsed = now - self.start
        if not self.enabled or elapsed < self.delay or (now - self.last < 0.1 and self.done < self.total):
            return  # quiet for short runs; at most ten redraws a second
        self.last = now
        filled = int(30 * self.done / self.total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                          f"{self.done}/{self.total} {elapsed:.1f}s")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class SweepResult:
    records: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "method on hw xN: why", one per combination


def sweep(hws, methods, seqs, batches=(1,), gpus=(1,), model=DEFAULT_MODEL, gen: int = 0,
          dtype: str | None = None, kv_dtype: str | None = None, params: dict | None = None,
          progress: bool = True, engine: str = "graphs") -> SweepResult:
    """Predict every hardware × GPU count × method over the context × batch grid. A combination
    that cannot run (heads do not split over N GPUs, a parameter does not suit a context) is
    skipped with its reason; everything else becomes one record per grid point."""
    hws = [load_profile(h) for h in hws]
    methods = list(methods)
    check_params(methods, params)
    seq = np.asarray(sorted(set(int(s) for s in seqs)), dtype=float)[:, None]
    batch = np.asarray(sorted(set(int(b) for b in batches)), dtype=float)[None, :]
    combos = list(product(hws, sorted(set(gpus)), methods))
    result = SweepResult()
    with Progress(len(combos), "sweep", enabled=progress) as bar:
        for hw, count, method in combos:
            kw = dict(model=model, gen=gen, dtype=dtype, kv_dtype=kv_dtype, gpus=count, engine=engine,
                      **method_params(method, params))
            try:
                pred = predict(hw, method, seq=seq, batch=batch, **kw)
                result.records += prediction_records(pred, breakdown=False)
            except KvsimError as exc:
                _by_context(result, hw, method, count, seq, batch, kw, exc)
            bar.step()
    return result


def _by_context(result: SweepResult, hw, method, count, seq, batch, kw, error) -> None:
    """A combination the whole grid refused, context by context: a parameter that suits only
    some contexts (SparQ's k above the shortest) drops those contexts, not the method."""
    if seq.size == 1:
        result.skipped.append(f"{method} on {hw.name} x{count}: {error}")
        return
    for context in seq[:, 0]:
        try:
            pred = predict(hw, method, seq=np.asarray([[context]]), batch=batch, **kw)
            result.records += prediction_records(pred, breakdown=False)
        except KvsimError as exc:
            result.skipped.append(f"{method} on {hw.name} x{count} at context {int(context)}: {exc}")
