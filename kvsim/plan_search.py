"""The search behind ``kvsim.plan`` for one hardware × GPU count × method, vectorized over batch.

Max batch: one evaluation over batches 1..FIRST_BATCHES gives memory per GPU (and host) at every
one of them; memory is affine in batch (weights + activations + per-sequence KV), so base +
slope·b from batches 1 and 2, solved for the capacity, is the guess. Where the guess + 1 lies in
that array it also checks the guess (it fits, one more does not) and, from the same cost, times
every candidate; a larger guess takes one more evaluation over the candidates, the guess and the
guess + 1. Where memory is not affine the check fails and a vectorized bisection over
[0, MAX_BATCH] finds the limit.

Objectives: the chosen batch is the largest candidate whose time per output token (and time to
first token, for requests) meets them; the largest that fits when none does.

A ``Shape`` is what each sequence does: steady-state decode at context ``seq`` (``gen`` = 0), or a
whole request: prefill of a ``seq``-token prompt, then ``gen`` decode steps at contexts
seq+1 .. seq+gen (``kvsim.predict.generation``: every step evaluated up to REQUEST_EXACT_STEPS,
beyond that the trapezoidal rule over REQUEST_SAMPLES contexts with the end correction). Memory
is checked at the last context, seq+gen. TPOT of a request is its mean: decode time / gen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hardware import HardwareProfile
from .methods import Method
from .models import ModelConfig
from .plan_memo import CostMemo
from .intervals import interval
from .predict import fit_message, fits_memory, generation, step_cost
from .roofline import step_time
from .workload import Workload

MAX_BATCH = 1 << 20  # reported as the limit when even this many sequences fit
SEARCH_POINTS = 4096  # batches tried for the objective: all up to this, a geometric grid beyond
REQUEST_EXACT_STEPS = 64  # a request's decode steps each evaluated up to this many
REQUEST_SAMPLES = 65  # contexts sampled for the decode time of longer requests
FIRST_BATCHES = 512  # batches of the first evaluation (1 and 2 give the affine memory law)


@dataclass(frozen=True)
class Shape:
    seq: int  # context (steady state) or prompt (request)
    gen: int = 0  # generated tokens per request; 0: steady-state decode at ``seq``


class Evaluation:
    """One option at an array of batches: memory and fit at once, the times when asked
    (steady state: from ``cost``, which ``kvsim.plan_time`` can time beside others)."""

    def __init__(self, hw: HardwareProfile, batch: np.ndarray, cost, times, steady: bool, scratch=0.0):
        self.batch, self.cost, self.steady = batch, cost, steady
        # the step's memory with the prompt's prefill scratch beside the cache (Method.prefill_scratch)
        self.gpu_bytes = np.broadcast_to(cost.gpu_bytes + scratch, batch.shape)
        self.host_bytes = np.broadcast_to(cost.host_resident_bytes, batch.shape)
        self.fits = fits_memory(hw, self.gpu_bytes, self.host_bytes)
        self._times = times

    def times(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The times at the first ``count`` batches (last axis; all by default)."""
        shape = self.batch.shape[:-1] + (self.batch.shape[-1] if count is None else count,)
        return {name: np.broadcast_to(value, shape) for name, value in self._times(shape[-1]).items()}


@dataclass(frozen=True)
class Probe:
    """One option's configuration; evaluates it over an array of batches."""
    hw: HardwareProfile
    method: Method
    model: ModelConfig
    gpus: int
    shape: Shape
    dtype: str
    kv_dtype: str
    memo: CostMemo | None = None  # costs shared with other hardware that read the same facts
    engine: str = "graphs"  # how a step runs (kvsim.roofline.ENGINES)

    def workload(self, batch, seq) -> Workload:
        return Workload(seq=seq, batch=batch, gen=self.shape.gen, dtype=self.dtype, kv_dtype=self.kv_dtype)

    def _workloads(self, batch: np.ndarray) -> tuple:
        """(the prompt's workload, the last context's)."""
        seq, gen = self.shape.seq, self.shape.gen
        prompt = self.workload(batch, float(seq))
        return prompt, self.workload(batch, float(seq + gen)) if gen else prompt

    def _costed(self, batch: np.ndarray) -> tuple:
        """(prompt workload, last context's, prefill scratch, the step's cost at the last
        context). With a memo, what reads no hardware is shared with the other hardware."""
        if self.memo is None:
            prompt, last = self._workloads(batch)
            return prompt, last, self._scratch(prompt), step_cost(self.method, self.model, self.hw, last, self.gpus)
        # the workloads shared by every method and GPU count (the decoder's ops are made once
        # per workload: Workload.once); the method by identity: kvsim.plan builds each once
        prompt, last = self.memo.once((self.shape, self.dtype, self.kv_dtype, batch.tobytes()),
                                      lambda: self._workloads(batch))
        key = (id(self.method), id(self.model), self.gpus, self.shape, self.dtype, self.kv_dtype, batch.tobytes())
        return prompt, last, self.memo.once(key, lambda: self._scratch(prompt)), self.memo.cost(
            self.method, self.model, self.hw, last, self.gpus, key)

    def _scratch(self, prompt: Workload):
        """What the prompt's prefill holds beside the cache (Method.prefill_scratch)."""
        return self.method.prefill_scratch(self.model.sharded(self.gpus), prompt)

    def evaluate(self, batch: np.ndarray) -> Evaluation:
        """Memory at the last context (seq + gen); times (``Evaluation.times``): TPOT, and for
        requests ``ttft_s`` and ``request_s`` (TTFT + decode of the batch)."""
        seq, gen = self.shape.seq, self.shape.gen
        prompt, _, scratch, cost = self._costed(batch)
        whole = batch.shape[-1]

        def steady(count: int) -> dict:  # fewer batches: a cost of their own (time per element)
            timed = cost if count == whole else self._costed(batch[..., :count])[3]
            return {"tpot_s": step_time(timed, self.hw, self.engine, self.model.n_layers).latency_s}

        def request(count: int) -> dict:  # a generation at each batch
            first = prompt if count == whole else self.workload(batch[..., :count], float(seq))
            run = generation(self.method, self.model, self.hw, first, self.gpus,
                             exact_steps=REQUEST_EXACT_STEPS, samples=REQUEST_SAMPLES, engine=self.engine)
            return {"tpot_s": run.decode_s / gen, "ttft_s": run.ttft_s, "request_s": run.total_s}
        return Evaluation(self.hw, batch, cost, request if gen else steady, not gen, scratch)

    def fits(self, batch) -> np.ndarray:
        return self.evaluate(batch).fits


def affine_limit(hw: HardwareProfile, gpu: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Memory at batches 1 and 2 (last axis) → base + slope·b solved for each capacity, floored."""
    host_have = hw.host.memory_bytes.value if hw.host is not None else 0.0
    need = np.stack([gpu, host])  # GPU and host side by side on a first axis
    have = np.reshape([hw.memory.capacity_bytes.value, host_have], (2,) + (1,) * (gpu.ndim - 1))
    slope, used = need[..., 1] - need[..., 0], need[..., 1] > 0
    base = need[..., 0] - slope
    limit = np.where(slope > 0, np.floor((have - base) / np.where(slope > 0, slope, 1)),
                     np.where(base <= have, MAX_BATCH, 0))  # the divisor is never 0
    return np.clip(np.where(used, limit, MAX_BATCH).min(axis=0), 0, MAX_BATCH)  # the smaller where used


def settle(fits, guess) -> np.ndarray:
    """The exact largest fitting batch near ``guess``: kept where ``guess`` fits (or is 0) and
    ``guess + 1`` does not; elsewhere a vectorized bisection over [0, MAX_BATCH]. ``fits(b)``
    answers for batches ``b`` of shape guess.shape + (k,)."""
    lo = np.asarray(guess, dtype=float)
    hi = lo + 1
    both = fits(np.stack([np.maximum(lo, 1), hi], axis=-1))
    ok = ((lo == 0) | both[..., 0]) & ((hi > MAX_BATCH) | ~both[..., 1])
    lo, hi = np.where(ok, lo, 0.0), np.where(ok, hi, MAX_BATCH + 1.0)
    while np.any(active := hi - lo > 1):
        mid = np.where(active, np.floor((lo + hi) / 2), np.maximum(lo, 1))
        fit = fits(mid[..., None])[..., 0]
        lo, hi = np.where(active & fit, mid, lo), np.where(active & ~fit, mid, hi)
    return lo.astype(int)


def candidates(limit: int) -> np.ndarray:
    """Batches tried for the objective: every one up to SEARCH_POINTS, beyond that every one up to
    half of it and a geometric grid to ``limit`` (the chosen batch is then exact to the grid step)."""
    if limit <= SEARCH_POINTS:
        return np.arange(1.0, limit + 1)
    return np.unique(np.r_[np.arange(1.0, SEARCH_POINTS // 2 + 1),
                           np.round(np.geomspace(SEARCH_POINTS // 2, limit, SEARCH_POINTS // 2))])


def _meets(times: dict, tpot_s: float | None, ttft_s: float | None) -> np.ndarray:
    ok = np.ones(times["tpot_s"].shape, dtype=bool)
    if tpot_s:
        ok &= times["tpot_s"] <= tpot_s
    if ttft_s:
        ok &= times["ttft_s"] <= ttft_s
    return ok


def _with_check(probe: Probe, first: Evaluation, guess: int, batch: int | None):
    """(batches tried, their evaluation, the guess checked): the first evaluation where it
    holds the candidates and the guess + 1, else one over candidates, guess and guess + 1."""
    if batch or guess + 1 > first.batch.size:
        tried = np.array([float(batch)]) if batch else candidates(max(guess, 1))
        at = probe.evaluate(np.r_[tried, max(guess, 1), guess + 1])
        fits_guess, fits_next = at.fits[-2], at.fits[-1]
    else:
        tried, at = first.batch[:max(guess, 1)], first
        fits_guess, fits_next = first.fits[max(guess, 1) - 1], first.fits[guess]
    return tried, at, (guess == 0 or fits_guess) and (guess >= MAX_BATCH or not fits_next)


@dataclass(frozen=True)
class Located:
    """An option whose limit is known: the batches to choose from and their evaluation."""
    limit: int
    tried: np.ndarray
    at: Evaluation


def locate(probe: Probe, batch: int | None) -> Located | dict:
    """The exact max batch and the evaluation to choose from; a row already when nothing fits."""
    first = probe.evaluate(np.arange(1.0, FIRST_BATCHES + 1))
    guess = int(affine_limit(probe.hw, first.gpu_bytes[:2], first.host_bytes[:2]))

    def nothing() -> dict:  # a finished row (its note formatted only when needed)
        return {"max_batch": 0, "note": fit_message(probe.hw, first.gpu_bytes[0], first.host_bytes[0])}
    if not guess and not batch and not first.fits[0]:
        return nothing()
    tried, at, checked = _with_check(probe, first, guess, batch)
    limit = guess if checked else int(settle(probe.fits, guess))
    if limit != guess and not batch:
        if not limit:
            return nothing()
        tried = candidates(limit)
        at = probe.evaluate(tried)
    return Located(limit, tried, at)


def _chosen(times: dict, size: int, batch: int | None, tpot_s, ttft_s) -> int:
    """Index of the largest tried batch meeting the objectives; the largest tried when none does
    (or the one given)."""
    meets = np.flatnonzero(_meets(times, tpot_s, ttft_s)[:size]) if not batch else np.array([], int)
    return int(meets[-1]) if meets.size else size - 1


def choose(probe: Probe, found: Located, times: dict, batch: int | None, tpot_s: float | None,
           ttft_s: float | None) -> dict:
    """One option's measured columns: fits, max_batch, batch, times, memory, note."""
    tried, at = found.tried, found.at
    i = _chosen(times, tried.size, batch, tpot_s, ttft_s)
    # the batch chosen where every time is at its 90% interval's slow end, and at its fast end
    low, high = interval(1.0, probe.hw.trust_class, probe.hw.name)
    slow = _chosen({k: v * high for k, v in times.items()}, tried.size, batch, tpot_s, ttft_s)
    fast = _chosen({k: v * low for k, v in times.items()}, tried.size, batch, tpot_s, ttft_s)
    fits = bool(at.fits[i])
    row = {"max_batch": found.limit, "batch": int(tried[i]), "fits": fits,
           "batch_low": int(tried[min(i, slow)]), "batch_high": int(tried[max(i, fast)]),
           "memory_bytes": float(at.gpu_bytes[i]), "capacity_bytes": probe.hw.memory.capacity_bytes.value,
           "note": "" if fits else fit_message(probe.hw, at.gpu_bytes[i], at.host_bytes[i])}
    return row | {name: float(value[i]) for name, value in times.items()}
