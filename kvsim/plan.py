"""Capacity planning: for every hardware × GPU count × method, what fits, how fast, at what price.

An option is one decode configuration at context ``seq`` (steady-state decode: every sequence in
the batch holds ``seq`` tokens; prefill is not counted). Its ``max_batch`` is exact: that batch fits
in ``predict`` and one more does not. It is evaluated at ``batch`` when one is given; otherwise at
the largest batch that fits and meets the time-per-output-token objective (the largest that fits
when none meets it). Dollars per million output tokens = GPUs × hourly price / (3600 × tokens/s)
× 1e6, from the shipped price table (``kvsim/prices.yaml``) or the user's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import KvsimError
from .hardware import HardwareProfile, load_profile
from .methods import METHODS
from .models import DEFAULT_MODEL
from .predict import predict
from .sweep import Progress, check_params, gpu_profiles, method_params
from .yamlfile import read_mapping, validated

PRICES_FILE = Path(__file__).with_name("prices.yaml")
MAX_BATCH = 1 << 20  # reported as the limit when even this many sequences fit
SEARCH_POINTS = 4096  # batches tried for the objective: all up to this, a geometric grid beyond


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_gpu_hour: float = Field(gt=0)
    provider: str = Field(min_length=1)
    product: str = ""
    source: str = Field(min_length=3)
    checked: str = Field(min_length=4, description="the day the price was read")
    via: str = ""


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The shipped price table, with the entries of ``path`` (same fields) replacing its own."""
    prices = _read_prices(PRICES_FILE)
    if path is not None:
        prices.update(_read_prices(Path(path)))
    return prices


def _read_prices(path: Path) -> dict[str, Price]:
    data = read_mapping(path, "price file")
    if not isinstance(data.get("prices"), dict):
        raise KvsimError(f"{path}: expected a 'prices:' mapping of hardware name to price fields")
    return {str(name): validated(Price, fields_, path, prefix=f"prices.{name}.")
            for name, fields_ in data["prices"].items()}


def price_for(hw: HardwareProfile, prices: dict[str, Price]) -> Price | None:
    return next((prices[n] for n in [hw.name, *hw.aliases] if n in prices), None)


@dataclass(frozen=True)
class Option:
    hw: str
    gpus: int
    method: str
    fits: bool
    max_batch: int
    batch: int = 0
    tpot_s: float | None = None
    tokens_per_s: float | None = None
    usd_per_hour: float | None = None
    usd_per_mtok: float | None = None
    meets_slo: bool = False
    memory_bytes: float | None = None  # per GPU, at ``batch``
    capacity_bytes: float | None = None
    price_source: str | None = None
    note: str = ""
    cheapest: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _fits(hw, method, seq, batch, kw) -> np.ndarray:
    return np.asarray(predict(hw, method, seq=seq, batch=batch, **kw).fits)


def _linear_guess(hw, method, seq: np.ndarray, kw) -> np.ndarray:
    """Memory is linear in batch: base + slope·b from batch 1 and 2, solved for each capacity."""
    pred = predict(hw, method, seq=seq[..., None], batch=np.array([1.0, 2.0]), **kw)
    guess = np.full(seq.shape, float(MAX_BATCH))
    for need, have in ((pred.peak_gpu_bytes, pred.gpu_capacity_bytes),
                       (pred.peak_host_bytes, pred.host_capacity_bytes)):
        need = np.broadcast_to(need, seq.shape + (2,))
        slope, used = need[..., 1] - need[..., 0], need[..., 1] > 0
        base = need[..., 0] - slope
        with np.errstate(divide="ignore", invalid="ignore"):
            limit = np.where(slope > 0, np.floor((have - base) / np.where(slope > 0, slope, 1)),
                             np.where(base <= have, MAX_BATCH, 0))
        guess = np.where(used, np.minimum(guess, limit), guess)
    return np.clip(guess, 0, MAX_BATCH)


def settle(hw, method, seq, guess, kw) -> np.ndarray:
    """The exact largest fitting batch near ``guess``: kept where predict says ``guess`` fits (or
    is 0) and ``guess + 1`` does not; elsewhere found by a vectorized bisection over [0, MAX]."""
    seq, lo = np.asarray(seq, dtype=float), np.asarray(guess, dtype=float)
    hi = lo + 1
    both = _fits(hw, method, seq[..., None], np.stack([np.maximum(lo, 1), hi], axis=-1), kw)
    ok = ((lo == 0) | both[..., 0]) & ((hi > MAX_BATCH) | ~both[..., 1])
    lo, hi = np.where(ok, lo, 0.0), np.where(ok, hi, MAX_BATCH + 1.0)
    while np.any(active := hi - lo > 1):
        mid = np.where(active, np.floor((lo + hi) / 2), np.maximum(lo, 1))
        fit = _fits(hw, method, seq, mid, kw)
        lo, hi = np.where(active & fit, mid, lo), np.where(active & ~fit, mid, hi)
    return lo.astype(int)


def max_batch(hw, method="dense", seq=4096, model=DEFAULT_MODEL, gpus: int = 1,
              dtype: str | None = None, kv_dtype: str | None = None, **params) -> np.ndarray:
    """Largest batch that fits at each context in ``seq`` (0: not even one sequence fits)."""
    hw, seq = load_profile(hw), np.asarray(seq, dtype=float)
    kw = dict(model=model, gpus=gpus, dtype=dtype, kv_dtype=kv_dtype, **params)
    return settle(hw, method, seq, _linear_guess(hw, method, seq, kw), kw)


def _candidates(limit: int) -> np.ndarray:
    """Batches tried for the objective: every one up to SEARCH_POINTS, beyond that every one up to
    half of it and a geometric grid to ``limit`` (the chosen batch is then exact to the grid step)."""
    if limit <= SEARCH_POINTS:
        return np.arange(1.0, limit + 1)
    return np.unique(np.r_[np.arange(1.0, SEARCH_POINTS // 2 + 1),
                           np.round(np.geomspace(SEARCH_POINTS // 2, limit, SEARCH_POINTS // 2))])


def _choose(hw, method, seq, limit, batch, tpot_s, kw):
    """(batch, prediction over the batches tried, index of the chosen one)."""
    tried = np.array([float(batch)]) if batch else _candidates(limit)
    pred = predict(hw, method, seq=seq, batch=tried, **kw)
    latency = np.broadcast_to(pred.latency_s, tried.shape)
    meets = np.flatnonzero(latency <= tpot_s) if tpot_s and not batch else np.array([], int)
    index = int(meets[-1]) if meets.size else len(tried) - 1
    return int(tried[index]), pred, index


def evaluate(hw, method: str, seq: int, model=DEFAULT_MODEL, gpus: int = 1, batch: int | None = None,
             tpot_s: float | None = None, price: Price | None = None, dtype: str | None = None,
             kv_dtype: str | None = None, params: dict | None = None, engine: str = "graphs") -> Option:
    """One option; a configuration that cannot run (heads that do not split over ``gpus``, a
    parameter unsuited to the context) is an option that does not fit, with the reason."""
    hw = load_profile(hw)
    kw = dict(model=model, gpus=gpus, dtype=dtype, kv_dtype=kv_dtype, engine=engine, **method_params(method, params))
    try:
        limit = int(max_batch(hw, method, seq, **kw))
        if not limit and not batch:
            note = predict(hw, method, seq=seq, batch=1, **kw).fit_message()
            return Option(hw.name, gpus, method, fits=False, max_batch=0, note=note)
        chosen, pred, index = _choose(hw, method, float(seq), limit, batch, tpot_s, kw)
    except KvsimError as exc:
        return Option(hw.name, gpus, method, fits=False, max_batch=0, note=str(exc))
    return _option(hw, gpus, method, limit, chosen, pred, index, tpot_s, price)


def _option(hw, gpus, method, limit, batch, pred, index, tpot_s, price) -> Option:
    at = lambda value: np.broadcast_to(value, np.shape(pred.latency_s))[index]  # noqa: E731
    fits, tpot = bool(at(pred.fits)), float(at(pred.latency_s))
    rate = batch / tpot
    hourly = price.usd_per_gpu_hour * gpus if price else None
    return Option(
        hw=hw.name, gpus=gpus, method=method, fits=fits, max_batch=limit, batch=batch, tpot_s=tpot,
        tokens_per_s=rate, usd_per_hour=hourly,
        usd_per_mtok=hourly / 3600 / rate * 1e6 if hourly and fits else None,
        meets_slo=fits and (tpot_s is None or tpot <= tpot_s),
        memory_bytes=float(at(pred.peak_gpu_bytes)), capacity_bytes=pred.gpu_capacity_bytes,
        price_source=f"{price.provider}, {price.source} (read {price.checked})" if price else None,
        note="" if fits else pred.fit_message())


def rank(options: list[Option]) -> list[Option]:
    """Options that meet the objective by cost (unpriced after priced), then those that fit but
    miss it, then those that do not fit; the first priced option meeting it is the cheapest."""
    def key(o: Option):
        group = 0 if o.meets_slo and o.usd_per_mtok else 1 if o.meets_slo else 2 if o.fits else 3
        cost = o.usd_per_mtok if o.usd_per_mtok is not None else float("inf")
        return (group, cost, o.tpot_s or float("inf"), o.hw, o.gpus, o.method)
    ranked = sorted(options, key=key)
    if ranked and ranked[0].meets_slo and ranked[0].usd_per_mtok:
        ranked[0] = replace(ranked[0], cheapest=True)
    return ranked


def plan(model=DEFAULT_MODEL, seq: int = 4096, hws=None, methods=None, gpus=(1, 2, 4, 8),
         tpot_ms: float | None = None, batch: int | None = None, prices: dict | str | None = None,
         dtype: str | None = None, kv_dtype: str | None = None, params: dict | None = None,
         progress: bool = False, engine: str = "graphs") -> list[Option]:
    """Every hardware (default: all GPU profiles) × GPU count × method (default: all), ranked."""
    hws = [load_profile(h) for h in hws] if hws else gpu_profiles()
    methods = list(methods or METHODS)
    check_params(methods, params)
    table = prices if isinstance(prices, dict) else load_prices(prices)
    combos = list(product(hws, sorted(set(gpus)), methods))
    options = []
    with Progress(len(combos), "plan", enabled=progress) as bar:
        for hw, count, method in combos:
            options.append(evaluate(hw, method, seq, model=model, gpus=count, batch=batch,
                                    tpot_s=tpot_ms / 1e3 if tpot_ms else None, price=price_for(hw, table),
                                    dtype=dtype, kv_dtype=kv_dtype, params=params, engine=engine))
            bar.step()
    return rank(options)
