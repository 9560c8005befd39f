"""The public entry: schedule(hw, model, method, batch, prompt, gen) -> ScheduleResult."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import KvsimError
from ..profiles import load_profile
from ..methods import get_method
from ..models import load_model
from .baselines import Baseline, flexgen, vllm
from .evaluate import Evaluation
from .inputs import StepInputs, step_inputs
from .optimize import Grid, optimize

# --batch auto tries these (ALISA's throughput runs use batch 4-64, arXiv 2403.17312 §6)
BATCH_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class ScheduleResult:
    inputs: StepInputs
    best: Evaluation  # one plan
    baselines: dict = field(default_factory=dict)  # name -> Baseline
    candidates: int = 0
    search_s: float = 0.0
    batches: dict = field(default_factory=dict)  # --batch auto: batch -> best throughput (0: no fit)

    @property
    def throughput(self) -> float:
        return float(self.best.throughput[0])


def _params(method: str, params: dict | None, kv_bits: int) -> dict:
    params = dict(params or {})
    if kv_bits == 8 and "kv_bits" in get_method(method, {}).model_fields:
        params.setdefault("kv_bits", 8)
    return params


def _one(method, model, hw, batch, prompt, gen, dtype, kv_dtype, grid):
    inp = step_inputs(method, model, hw, batch, prompt, gen, dtype, kv_dtype)
    start = time.perf_counter()
    found = optimize(inp, grid)
    return inp, found, time.perf_counter() - start


def _auto_batch(method, model, hw, prompt, gen, dtype, kv_dtype, grid, max_batch):
    """Every candidate batch up to ``max_batch``, smallest first, until one does not fit (a
    larger batch never fits where a smaller one does not); the best throughput wins."""
    best, tried = None, {}
    for batch in (b for b in BATCH_CANDIDATES if b <= max_batch):
        try:
            one = _one(method, model, hw, batch, prompt, gen, dtype, kv_dtype, grid)
        except KvsimError:
            tried[batch] = 0.0
            break
        tried[batch] = float(one[1].best.throughput[0])
        if best is None or tried[batch] > best[1].best.throughput[0]:
            best = one
    if best is None:
        raise KvsimError(f"does not fit: not even batch 1 on {hw.name}")
    return best, tried


def schedule(hw, model, method: str = "alisa", batch: int | str = 16, prompt: int = 128,
             gen: int = 512, kv_bits: int = 16, dtype: str | None = None, params: dict | None = None,
             baselines: bool = True, grid: Grid = Grid(), max_batch: int = 256) -> ScheduleResult:
    """The best three-phase plan for ``method`` (and, with batch="auto", the best batch), with the
    FlexGen-style and vLLM-style baselines at the same batch."""
    hw, model = load_profile(hw), load_model(model)
    if kv_bits not in (8, 16):
        raise KvsimError(f"--kv-bits must be 8 or 16, got {kv_bits}")
    if prompt < 1:
        raise KvsimError(f"--prompt must be at least 1, got {prompt}")
    dtype = dtype or hw.preferred_dtype
    kv_dtype = "int8" if kv_bits == 8 else dtype
    if batch != "auto" and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise KvsimError(f"batch must be a positive whole number or 'auto', got {batch!r}")
    chosen = get_method(method, _params(method, params, kv_bits))
    tried = {}
    if batch == "auto":
        (inp, found, spent), tried = _auto_batch(chosen, model, hw, prompt, gen, dtype, kv_dtype, grid, max_batch)
    else:
        inp, found, spent = _one(chosen, model, hw, int(batch), prompt, gen, dtype, kv_dtype, grid)
    others: dict[str, Baseline] = {}
    if baselines:
        others = {"flexgen": flexgen(inp), "vllm": vllm(inp)}
    return ScheduleResult(inp, found.best, others, found.candidates, spent, tried)
