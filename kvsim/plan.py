"""Capacity planning: for every hardware × GPU count × method, what fits, how fast, at what price.

An option is one configuration running sequences of one shape (``plan_search.Shape``):
steady-state decode at context ``seq`` (every sequence holds ``seq`` tokens, prefill not
counted), or whole requests of a ``seq``-token prompt and ``gen`` generated tokens. Its
``max_batch`` is exact: that batch fits in ``predict`` and one more does not. It is evaluated
at ``batch`` when one is given; otherwise at the largest batch that fits and meets the
objectives (time per output token, and for requests time to first token); the largest that
fits when none meets them.

Price: dollars per million output tokens = GPUs × hourly price / (3600 × tokens/s) × 1e6, from
the shipped price table (``kvsim/prices.yaml``) or the user's. Steady state: tokens/s = batch /
TPOT. Requests: tokens/s = batch × gen / (TTFT + decode time of the batch), so the GPUs' time
in prefill is paid for by the generated tokens; ``usd_per_mtok_all`` divides by prompt and
generated tokens instead.

The option table (``OptionTable``) holds one numpy array per column, one row per option, in
the order hardware × GPU count × method (``rank`` reorders it). Columns, None/NaN where absent:

    hw, method (str); gpus, max_batch, batch (int; batch 0: not evaluated); fits, meets_slo,
    cheapest (bool); tpot_s, tokens_per_s, usd_per_hour, usd_per_mtok, memory_bytes (per GPU,
    at ``batch``), capacity_bytes (float); price_source, note (str)
    requests only: ttft_s, request_s (TTFT + decode of the batch), usd_per_mtok_all (float)

How: each option's max batch and candidates come from one evaluation over an array of batches
(``plan_search``); a configuration's cost is computed once for all hardware, each profile's
numbers the cost only keeps (the workspace) filled in, and the decoder's ops once for all
methods (``plan_memo``, ``Workload.once``); the steady-state latencies of every option of one
hardware come from one roofline call per kind of op (``plan_time``). Only hardware × GPU
count × method is looped in Python, never batch.

Arrays in, arrays out: ``option_table`` measures; ``OptionTable.with_columns`` adds columns of
the same length (say, a quality score); ``rank(table, keep)`` orders the rows, optionally ranking
only where the boolean ``keep`` is true (the rest after them, as not meeting the objective);
``table.rows()`` gives JSON-ready dicts and ``table.options()`` attribute-style rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from types import SimpleNamespace

import numpy as np

from .errors import KvsimError
from .profiles import load_profile
from .intervals import quantiles, scaled_interval
from .methods import METHODS, get_method
from .models import DEFAULT_MODEL, load_model
from .plan_search import MAX_BATCH, Located, Probe, Shape, affine_limit, choose, locate, settle
from .plan_memo import CostMemo
from .plan_time import time_together
from .predict import fits_memory, step_cost
from .prices import PRICES_FILE, Price, load_prices, price_for
from .sweep import check_params, gpu_profiles, method_params
from .workload import Workload

__all__ = ["MAX_BATCH", "PRICES_FILE", "Option", "OptionTable", "Price", "evaluate", "load_prices",
           "max_batch", "option_table", "plan", "price_for", "rank", "settle"]


class Option(SimpleNamespace):
    """One row of an option table: every column an attribute (None where absent)."""

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class OptionTable:
    columns: dict  # name -> numpy array, all of one length

    def __len__(self) -> int:
        return len(self.columns["hw"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def with_columns(self, **arrays) -> "OptionTable":
        for name, array in arrays.items():
            if len(array) != len(self):
                raise ValueError(f"column {name}: {len(array)} rows, the table has {len(self)}")
        return OptionTable({**self.columns, **{k: np.asarray(v) for k, v in arrays.items()}})

    def take(self, rows) -> "OptionTable":
        """The rows at integer positions or where a boolean mask is true, in that order."""
        return OptionTable({name: array[rows] for name, array in self.columns.items()})

    def rows(self) -> list[dict]:
        columns = {name: _plain_column(array) for name, array in self.columns.items()}
        return [dict(zip(columns, values)) for values in zip(*columns.values())]

    def options(self) -> list[Option]:
        return [Option(**row) for row in self.rows()]


def _plain_column(array: np.ndarray) -> list:
    """A column as Python values (numpy scalars in object columns too); NaN, a float column's
    missing value, as None."""
    values = array.tolist() if array.ndim == 1 else list(array)
    if array.dtype.kind == "O" or array.ndim != 1:
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return [None if isinstance(v, float) and v != v else v for v in values] if array.dtype.kind in "fO" else values


def _methods(names, params: dict | None) -> dict:
    """name -> the method with its parameters, or the error they give (each of its rows says it)."""
    made = {}
    for name in names:
        try:
            made[name] = get_method(name, method_params(name, params))
        except KvsimError as exc:
            made[name] = exc
    return made


def _locate(hw, method, model, gpus, shape, dtype, kv_dtype, batch, memo, engine="graphs"):
    """(probe, where its limit is) or a finished row: a configuration that cannot run (heads that
    do not split over ``gpus``, a parameter unsuited to the context) does not fit, with the reason."""
    if isinstance(method, KvsimError):  # the parameters make no such method
        return None, {"max_batch": 0, "note": str(method)}
    dtype = dtype or hw.preferred_dtype
    try:
        probe = Probe(hw, method, model, gpus, shape, dtype, kv_dtype or dtype, memo, engine)
        return probe, locate(probe, batch)
    except KvsimError as exc:
        return None, {"max_batch": 0, "note": str(exc)}


def _times(found: list) -> list:
    """Times of every located option: the steady-state ones of each hardware (every method and
    GPU count) from a few roofline calls (``plan_time``; graph replays only: the eager engine's
    host stream runs each op list in its own order), requests one by one; a failure leaves that
    option's reason."""
    times: list = [None] * len(found)
    steady = [i for i, (probe, where) in enumerate(found)
              if isinstance(where, Located) and where.at.steady and probe.engine == "graphs"]
    latency = time_together([found[i][0].hw for i in steady], [found[i][1].at.cost for i in steady],
                            [found[i][1].tried.size for i in steady])
    for i, value in zip(steady, latency):
        if isinstance(value, KvsimError):
            found[i] = (None, {"max_batch": 0, "note": str(value)})
        else:
            times[i] = {"tpot_s": value}
    for i, (probe, where) in enumerate(found):
        if isinstance(where, Located) and times[i] is None:
            try:
                times[i] = where.at.times(where.tried.size)
            except KvsimError as exc:
                found[i] = (None, {"max_batch": 0, "note": str(exc)})
    return times


def _measured_columns(rows: list[dict], request: bool) -> dict:
    floats = ("tpot_s", "memory_bytes", "capacity_bytes") + (("ttft_s", "request_s") if request else ())
    columns = {name: np.array([r.get(name, np.nan) for r in rows], dtype=float) for name in floats}
    columns["fits"] = np.array([r.get("fits", False) for r in rows], dtype=bool)
    columns["max_batch"] = np.array([r["max_batch"] for r in rows], dtype=int)
    for name in ("batch", "batch_low", "batch_high"):
        columns[name] = np.array([r.get(name, 0) for r in rows], dtype=int)
    columns["note"] = np.array([r["note"] for r in rows], dtype=object)
    return columns


def _priced(m: dict, hws, gpus, prices: dict, shape: Shape, objectives) -> dict:
    """Throughput, price and the objective, vectorized over the options."""
    tpot_s, ttft_s = objectives
    evaluated = m["batch"] > 0
    price = [price_for(hw, prices) for hw in hws]
    per_gpu = np.array([p.usd_per_gpu_hour if p else np.nan for p in price])
    hourly = np.where(evaluated, per_gpu * gpus, np.nan)
    request = m.get("request_s")
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(evaluated, m["batch"] / m["tpot_s"] if request is None
                        else m["batch"] * shape.gen / request, np.nan)
        usd = np.where(m["fits"], hourly / 3600 / rate * 1e6, np.nan)
    meets = m["fits"] & ((m["tpot_s"] <= tpot_s) if tpot_s else True) & ((m["ttft_s"] <= ttft_s) if ttft_s else True)
    source = np.array([f"{p.provider}, {p.source} (read {p.checked})" if p and e else None
                       for p, e in zip(price, evaluated)], dtype=object)
    out = {"tokens_per_s": rate, "usd_per_hour": hourly, "usd_per_mtok": usd, "meets_slo": meets,
           "price_source": source}
    out |= _ranges(hws, m["tpot_s"], usd)
    if request is not None:
        out["usd_per_mtok_all"] = usd * shape.gen / (shape.seq + shape.gen)
    return out


def _ranges(hws, tpot_s, usd_per_mtok) -> dict:
    """90% intervals of TPOT and $/M tokens (both proportional to the step latency at the
    option's batch) from the residuals of each hardware's trust class (kvsim.intervals)."""
    keys = [(hw.trust_class, hw.name) for hw in hws]
    low, high, used = np.ones(len(hws)), np.ones(len(hws)), np.empty(len(hws), dtype=object)
    for key in set(keys):
        rows = np.array([k == key for k in keys], dtype=bool)
        low[rows], high[rows] = scaled_interval(1.0, key[0], device=key[1])
        used[rows] = quantiles(*key)[2]
    return {"tpot_s_low": tpot_s * low, "tpot_s_high": tpot_s * high, "usd_per_mtok_low": usd_per_mtok * low,
            "usd_per_mtok_high": usd_per_mtok * high, "interval_class": used}


def _assemble(hws, gpus, methods, measured: dict, priced: dict) -> OptionTable:
    ordered = {"hw": np.array([hw.name for hw in hws]), "gpus": gpus, "method": np.array(methods),
               "fits": measured["fits"], "max_batch": measured["max_batch"], "batch": measured["batch"],
               "batch_low": measured["batch_low"], "batch_high": measured["batch_high"],
               "tpot_s": measured["tpot_s"], "tpot_s_low": priced["tpot_s_low"], "tpot_s_high": priced["tpot_s_high"]}
    ordered |= {name: measured[name] for name in ("ttft_s", "request_s") if name in measured}
    ordered |= {name: priced[name] for name in ("tokens_per_s", "usd_per_hour", "usd_per_mtok",
                                                 "usd_per_mtok_low", "usd_per_mtok_high", "interval_class")}
    ordered |= {"usd_per_mtok_all": priced["usd_per_mtok_all"]} if "usd_per_mtok_all" in priced else {}
    ordered |= {"meets_slo": priced["meets_slo"], "memory_bytes": measured["memory_bytes"],
                "capacity_bytes": measured["capacity_bytes"], "price_source": priced["price_source"],
                "note": measured["note"], "cheapest": np.zeros(len(hws), dtype=bool)}
    return OptionTable(ordered)


def option_table(model=DEFAULT_MODEL, seq: int = 4096, hws=None, methods=None, gpus=(1, 2, 4, 8),
                 tpot_ms: float | None = None, batch: int | None = None, prices: dict | str | None = None,
                 dtype: str | None = None, kv_dtype: str | None = None, params: dict | None = None,
                 gen: int = 0, ttft_ms: float | None = None, engine: str = "graphs") -> OptionTable:
    """Every hardware (default: all GPU profiles) × GPU count × method (default: all), unranked.
    With ``gen`` > 0 each option runs whole requests of a ``seq``-token prompt and ``gen`` tokens."""
    hws = [load_profile(h) for h in hws] if hws else gpu_profiles()
    methods, model, shape = list(methods or METHODS), load_model(model), Shape(int(seq), int(gen))
    check_params(methods, params)
    if ttft_ms and not gen:
        raise KvsimError("a TTFT objective needs whole requests: give the generated tokens too")
    table = prices if isinstance(prices, dict) else load_prices(prices)
    combos = list(product(hws, sorted(set(gpus)), methods))
    objectives = (tpot_ms / 1e3 if tpot_ms else None, ttft_ms / 1e3 if ttft_ms else None)
    memo, made = CostMemo(), _methods(methods, params)
    found = [_locate(hw, made[method], model, count, shape, dtype, kv_dtype, batch, memo, engine)
             for hw, count, method in combos]
    times = _times(found)
    rows = [choose(probe, where, timed, batch, *objectives) if isinstance(where, Located) else where
            for (probe, where), timed in zip(found, times)]
    measured = _measured_columns(rows, request=gen > 0)
    hw_col, gpu_col, method_col = zip(*combos) if combos else ((), (), ())
    gpu_col = np.array(gpu_col, dtype=int)
    return _assemble(hw_col, gpu_col, method_col, measured,
                     _priced(measured, hw_col, gpu_col, table, shape, objectives))


def rank(table: OptionTable, keep=None) -> OptionTable:
    """Options that meet the objective by cost (unpriced after priced), then those that fit but
    miss it, then those that do not fit; the first priced option meeting it is the cheapest.
    Where ``keep`` (boolean per row) is false an option counts as missing the objective."""
    meets = table["meets_slo"] & (True if keep is None else np.asarray(keep, dtype=bool))
    cost = np.where(np.isnan(table["usd_per_mtok"]), np.inf, table["usd_per_mtok"])
    group = np.where(meets & np.isfinite(cost), 0, np.where(meets, 1, np.where(table["fits"], 2, 3)))
    tpot = np.where(np.isnan(table["tpot_s"]), np.inf, table["tpot_s"])
    order = np.lexsort((table["method"].astype(str), table["gpus"], table["hw"].astype(str), tpot, cost, group))
    ranked = table.take(order)
    cheapest = np.zeros(len(ranked), dtype=bool)
    cheapest[:1] = group[order][:1] == 0
    return ranked.with_columns(meets_slo=meets[order], cheapest=cheapest)


def plan(model=DEFAULT_MODEL, seq: int = 4096, hws=None, methods=None, gpus=(1, 2, 4, 8),
         tpot_ms: float | None = None, batch: int | None = None, prices: dict | str | None = None,
         dtype: str | None = None, kv_dtype: str | None = None, params: dict | None = None,
         gen: int = 0, ttft_ms: float | None = None, engine: str = "graphs") -> list[Option]:
    """``option_table`` ranked, as rows with attributes."""
    return rank(option_table(model, seq, hws, methods, gpus, tpot_ms, batch, prices, dtype, kv_dtype,
                             params, gen, ttft_ms, engine)).options()


def evaluate(hw, method: str, seq: int, model=DEFAULT_MODEL, gpus: int = 1, batch: int | None = None,
             tpot_s: float | None = None, price: Price | None = None, dtype: str | None = None,
             kv_dtype: str | None = None, params: dict | None = None, gen: int = 0,
             ttft_s: float | None = None, engine: str = "graphs") -> Option:
    """One option (``tpot_s``/``ttft_s`` in seconds; ``price`` for this hardware, or none)."""
    hw = load_profile(hw)
    prices = {hw.name: price} if price else {}
    table = option_table(model, seq, [hw], [method], [gpus], tpot_s * 1e3 if tpot_s else None, batch,
                         prices, dtype, kv_dtype, params, gen, ttft_s * 1e3 if ttft_s else None, engine)
    return table.options()[0]


def max_batch(hw, method="dense", seq=4096, model=DEFAULT_MODEL, gpus: int = 1,
              dtype: str | None = None, kv_dtype: str | None = None, **params) -> np.ndarray:
    """Largest batch that fits at each context in ``seq`` (0: not even one sequence fits)."""
    hw, seq = load_profile(hw), np.asarray(seq, dtype=float)
    dtype = dtype or hw.preferred_dtype
    method, model = get_method(method, params), load_model(model)

    def memory(batch):
        wl = Workload(seq=seq[..., None], batch=batch, dtype=dtype, kv_dtype=kv_dtype or dtype)
        cost = step_cost(method, model, hw, wl, gpus)
        shape = np.broadcast_shapes(seq[..., None].shape, np.shape(batch))
        peak = cost.gpu_bytes + method.prefill_scratch(model.sharded(gpus), wl)  # the prefill's beside the cache
        return np.broadcast_to(peak, shape), np.broadcast_to(cost.host_resident_bytes, shape)

    guess = affine_limit(hw, *memory(np.array([1.0, 2.0])))
    return settle(lambda batch: fits_memory(hw, *memory(batch)), guess)
