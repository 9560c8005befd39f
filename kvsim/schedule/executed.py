"""What the runtime executes of a schedule, and what kvsim predicts for that execution.

A GPU smaller than the device is emulated by a byte budget (``with_gpu_memory``): the plan is
solved for it, and the runtime (runtime/schedule_exec.py) sizes its GPU pools from the plan's
token counts, so the plan and the run hold the same rows.

Integer token counts per step j = 0..G (the plan's continuous counts, rounded down), all per
sequence and the same in every layer (ALISA's placement is by position):
  deleted_j  tokens [0, deleted_j) have no K/V anywhere (Phase III, j >= p2: ⌊β·N_j⌋ ≤ old_j)
  last       tokens [0, last) keep their layer inputs x from creation (last = deleted_G)
  start      Phase-II tokens are positions >= start (= N_{p1-1}; 0 when p1 = 0)
  old_j      positions < old_j are outside the recent window (N_j − recent_j)
Position p >= start is in the α-share iff ⌊(p − start + 1)·α⌋ > ⌊(p − start)·α⌋ (evenly spread,
a share α of them); it moves to CPU memory (K/V, and x if kept) once p < old_j.
FlexGen-style: the LP's "pcie kv" solution (baselines._solve_lp): a fixed share 1 − cg of every
layer's KV (the oldest) in CPU memory, all of it streamed to the GPU every step.

The executor allocates its GPU pools for the whole run before the prefill, so it runs the prompt
in passes over part of the batch (``sequences_per_pass``: the most sequences whose pass fits
beside the pools); kvsim times those passes one after another (``in_passes``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import KvsimError
from ..hardware import Sourced
from ..methods import get_method
from ..models import first_layers
from ..predict import step_cost
from ..profiles import load_profile
from ..roofline import step_time
from ..units import format_bytes
from .baselines import _dense_inputs, _lp_rows, _solve_lp
from .evaluate import evaluate
from .inputs import StepInputs, prefill_held, step_inputs
from .run import schedule

BUDGET_SOURCE = "emulated GPU: a byte budget below the device's memory (kvsim schedule --gpu-mem)"


def with_gpu_memory(hw, nbytes: float | None):
    """The profile with its GPU memory set to ``nbytes`` (None: unchanged); never above the device's."""
    hw = load_profile(hw)
    if nbytes is None:
        return hw
    have = hw.memory.capacity_bytes.value
    if not 0 < nbytes <= have:
        raise KvsimError(f"--gpu-mem must be in (0, {format_bytes(have)}] (the device's memory), "
                         f"got {format_bytes(nbytes)}")
    memory = hw.memory.model_copy(update={"capacity_bytes": Sourced(value=float(nbytes), source=BUDGET_SOURCE)})
    return hw.model_copy(update={"memory": memory})


def alpha_count(lo, hi, start: int, alpha: float):
    """α-share positions in [lo, hi) (lo, hi >= start; arrays allowed)."""
    lo, hi = np.maximum(lo, start), np.maximum(hi, start)
    return np.floor((hi - start) * alpha + 1e-9) - np.floor((lo - start) * alpha + 1e-9)


def phase_of(j: int, p1: int, p2: int, alpha: float, beta: float) -> str:
    """The phase step j runs in: prefill (j = 0), I, II (j >= p1, α > 0) or III (j >= p2, β > 0)."""
    if j == 0:
        return "prefill"
    return "III" if beta > 0 and j >= p2 else "II" if alpha > 0 and j >= p1 else "I"


def token_plan(inp, plan) -> dict:
    """The integer counts above for ``plan`` (a Placement) on ``inp`` (StepInputs), the most
    rows each pool holds at once (K/V on the GPU and on the host, x on the GPU and on the host),
    and each layer's GPU arena, which K/V and x rows share (``arena``)."""
    G, P = inp.gen, inp.prompt
    n = (P + np.arange(G + 1)).astype(int)
    recent = np.asarray(inp.recent, dtype=int)
    old = n - recent
    deleted = np.where(np.arange(G + 1) >= plan.p2, np.floor(np.clip(plan.beta * n, 0, old) + 1e-9), 0).astype(int)
    start = 0 if plan.p1 == 0 else int(n[min(plan.p1, G + 1) - 1])
    alpha = plan.alpha if plan.p1 <= G else 0.0
    last = int(deleted[-1])
    host_kv = alpha_count(np.maximum(deleted, start), np.maximum(old, deleted), start, alpha)
    x_held = np.minimum(last, n)
    x_host = alpha_count(start, np.maximum(np.minimum(last, old), start), start, alpha)
    kv_gpu, x_gpu = n - deleted - host_kv, x_held - x_host
    return {"n": n.tolist(), "old": old.tolist(), "deleted": deleted.tolist(), "last": last,
            "start": start, "alpha": alpha, "p1": plan.p1, "p2": plan.p2, "beta": plan.beta,
            "gpu_rows": int(np.max(kv_gpu)), "host_rows": int(np.max(host_kv)),
            "x_gpu_rows": int(np.max(x_gpu)), "x_host_rows": int(np.max(x_host)), **arena(inp, kv_gpu, x_gpu)}


def arena(inp, kv_gpu, x_gpu) -> dict:
    """One layer's GPU memory for its K/V and kept x (runtime/schedule_store.py): one arena both
    share, as large as the most bytes they hold together at any step (kv_gpu, x_gpu: rows per
    sequence at each step), so rows deleted or offloaded free room for x. Counted in d-wide
    pieces per sequence (``arena_pieces``: 2·Hkv for a K/V row, D/d for an x row; the runtime
    allocates B·d of its dtype per piece) and in bytes (``arena_bytes``: ρ/L per K/V row, η/L
    per x row, kvsim's bytes per row and layer)."""
    m, L = inp.model, inp.model.n_layers
    pieces = 2 * m.n_kv_heads * kv_gpu + (m.d_model // m.head_dim) * x_gpu
    return {"arena_pieces": int(np.max(pieces)), "arena_bytes": float(np.max((inp.rho * kv_gpu + inp.eta * x_gpu) / L))}


def sequences_per_pass(inp: StepInputs, step0_bytes: float) -> int:
    """Sequences the executor's prefill takes a pass: the most whose pass fits the GPU beside
    what step 0 holds otherwise (``step0_bytes``: step 0's GPU bytes with the whole batch in one
    pass); 1 where none fits (step 0 is then over the budget, which kvsim validate prints)."""
    sequences = np.arange(1, inp.batch + 1)
    held = prefill_held(inp.method, inp.model, inp.wl, sequences)
    fits = step0_bytes - held[-1] + held <= inp.gpu_capacity
    return int(sequences[fits].max()) if fits.any() else 1


def in_passes(inp: StepInputs, sequences: int) -> StepInputs:
    """``inp`` with its prefill in passes of ``sequences`` of the batch (the last one takes the
    rest), one after another: step 0's stream times are the passes' sums, its held bytes one
    pass's (``prefill_held``) in place of the whole batch's."""
    if sequences >= inp.batch:
        return inp
    full, rest = divmod(inp.batch, sequences)
    sizes, counts = np.array([sequences, max(rest, 1)], dtype=float), np.array([full, int(rest > 0)])
    t = step_time(step_cost(inp.method, inp.model, inp.hw, inp.wl.with_(batch=sizes), prefill=True), inp.hw,
                  inp.engine, inp.model.n_layers)
    held = prefill_held(inp.method, inp.model, inp.wl, np.array([sequences, inp.batch], dtype=float))
    return replace(inp, compute_s=_at_prefill(inp.compute_s, counts @ np.broadcast_to(t.compute_stream_s, 2)),
                   copy_s=_at_prefill(inp.copy_s, counts @ np.broadcast_to(t.copy_stream_s, 2)),
                   fixed_gpu=_at_prefill(inp.fixed_gpu, inp.fixed_gpu[0] - held[1] + held[0]))


def _at_prefill(values: np.ndarray, value: float) -> np.ndarray:
    return np.concatenate([[value], values[1:]])


def _lp_placement(timed, x, cg: float):
    """Step times (each the longest of compute, CPU->GPU and GPU->CPU, as the LP's rows say) and
    GPU bytes of the LP's placement ``x`` on ``timed``'s inputs."""
    rows, memory = _lp_rows(timed, False)
    step = np.max([np.column_stack(three) @ x - rhs for *three, rhs in rows], axis=0)
    *three, rhs = memory[0]  # the LP's GPU row: coefs·x <= capacity − what is always held
    gpu = np.column_stack(three) @ x - rhs + timed.gpu_capacity
    kv = timed.rho * timed.n  # the executor allocates its GPU share for every step at the start (runtime/offload.py)
    return step, gpu + cg * (kv[-1] - kv)


def _offload_path(inp: StepInputs, fraction: float) -> StepInputs:
    """``inp`` (dense) with its decode steps' compute stream as the executor runs a cache whose
    oldest ``fraction`` is on the host (runtime/offload.py, kvsim.offload): the host block
    attended as its own piece and merged by log-sum-exp, the boundary rows' copies out, and
    their host calls. The transfers' time stays the LP's rows (ctog, gtoc)."""
    if fraction <= 0:
        return inp
    wl = inp.wl.with_(seq=inp.prompt + np.arange(1.0, inp.steps))
    t = step_time(step_cost(inp.method, inp.model, inp.hw, wl, offload=fraction), inp.hw, inp.engine,
                  inp.model.n_layers)
    return replace(inp, compute_s=np.concatenate([inp.compute_s[:1], t.compute_stream_s]))


def _flexgen_pcie(inp, engine: str, sequences: int | None) -> dict:
    """FlexGen-style with its attention over the GPU (K/V streamed): the LP's placement (chosen
    with CUDA-graph step times and a prefill in one pass, as kvsim schedule reports it), its step
    times on ``engine`` as the executor runs it (its offload path, its prefill passes), GPU bytes."""
    dense = _dense_inputs(inp, inp.batch)
    solved = _solve_lp(dense, False)
    if solved is None:
        raise KvsimError("FlexGen-style placement (K/V over PCIe) does not fit this GPU budget")
    x = solved.x[:3]
    wg, cg, hg = (float(v) for v in x)
    graphs = _offload_path(dense, 1 - cg)
    timed = graphs if engine == "graphs" else _offload_path(_dense_inputs(inp, inp.batch, engine), 1 - cg)
    if sequences is None:
        sequences = sequences_per_pass(timed, _lp_placement(timed, x, cg)[1][0])
    step, gpu = _lp_placement(in_passes(timed, sequences), x, cg)
    graphs_step = _lp_placement(in_passes(graphs, sequences), x, cg)[0]
    # PCIe per step: the host share of the KV in (every step) and of each new token's out
    kv, decode = dense.rho * dense.n, np.arange(dense.steps) > 0
    h2d = (1 - cg) * kv * decode + (1 - wg) * dense.weights
    d2h = (1 - cg) * np.where(decode, dense.rho, kv)
    return {"weights_gpu": wg, "kv_gpu": cg, "activations_gpu": hg, "step_s": step.tolist(),
            "total_s": float(step.sum()), "graphs_total_s": float(graphs_step.sum()), "gpu_bytes": gpu.tolist(),
            "pcie": (h2d + d2h).tolist(), "prefill_sequences": sequences}


def _alisa(inp, timed, placement, sequences: int | None) -> dict:
    """ALISA's half of ``prediction``: ``placement`` on ``timed``'s steps with the executor's
    prefill passes, and its CUDA-graph total beside."""
    if sequences is None:
        sequences = sequences_per_pass(timed, plan_prediction(timed, evaluate(timed, *placement))["gpu_bytes"][0])
    timed = in_passes(timed, sequences)
    alisa = plan_prediction(timed, evaluate(timed, *placement))
    alisa["graphs_total_s"] = float(evaluate(in_passes(inp, sequences), *placement).total_s[0])
    alisa["prefill_sequences"] = sequences
    return alisa


def plan_prediction(inp, best) -> dict:
    """The ALISA half of ``prediction`` for one evaluated plan ``best`` (an Evaluation). GPU
    bytes as the executor holds them: the plan counts the K/V and x rows live at each step
    (ρ·K/V rows + η·x rows), the executor every layer's arena for the whole run (its peak)."""
    plan = best.placement(0)
    tokens = token_plan(inp, plan)
    held = inp.model.n_layers * tokens["arena_bytes"] - (best.gpu_kv[0] - inp.meta_gpu)  # arena − live rows
    return {"p1": plan.p1, "p2": plan.p2, "alpha": plan.alpha, "beta": plan.beta,
            "weights_gpu": plan.weights_gpu, "step_s": best.step_s[0].tolist(),
            "total_s": float(best.total_s[0]), "gpu_bytes": (best.gpu_bytes[0] + held).tolist(),
            "gpu_kv": (best.gpu_kv[0] + held).tolist(),
            "recompute_rows": (inp.batch * best.recompute_rows[0]).tolist(),
            "pcie": (best.h2d[0] + best.d2h[0]).tolist(), "tokens": tokens}


def prediction(hw, model, layers, batch: int, prompt: int, gen: int, gpu_mem=None,
               params: dict | None = None, placement=None, engine: str = "eager", dtype: str | None = None,
               prefill_sequences: int | None = None) -> dict:
    """kvsim's plan for the emulated GPU (as ``kvsim schedule --gpu-mem`` chooses it: CUDA-graph
    step times) and what kvsim predicts for running it with steps timed on ``engine`` (the
    executor issues every op eagerly: "eager"), for ALISA's plan and for FlexGen's.
    ``placement`` (p1, p2, α, β): that plan instead of the best one (tests force phases so).
    ``dtype``: of weights, activations and K/V (the profile's preferred one unless given: the
    executor's on a GPU; tests on the CPU run fp32)."""
    hw, model = with_gpu_memory(hw, gpu_mem), first_layers(model, layers)
    dtype = dtype or hw.preferred_dtype
    if placement is None:
        result = schedule(hw, model, method="alisa", batch=batch, prompt=prompt, gen=gen, dtype=dtype,
                          params=params, baselines=False)
        inp, plan = result.inputs, result.best.placement(0)
        placement = (plan.p1, plan.p2, plan.alpha, plan.beta, plan.weights_gpu)
    else:
        inp = step_inputs(get_method("alisa", params or {}), model, hw, batch, prompt, gen, dtype, dtype)
    timed = inp if engine == "graphs" else step_inputs(inp.method, model, hw, batch, prompt, gen, inp.wl.dtype,
                                                       inp.wl.kv_dtype, engine)
    return {"hw": hw.name, "model": model.name, "n_layers": model.n_layers, "batch": batch,
            "prompt": prompt, "gen": gen, "gpu_capacity_bytes": inp.gpu_capacity, "engine": engine,
            "workspace_bytes": hw.workspace_bytes.value, "params": inp.method.model_dump(),
            "alisa": _alisa(inp, timed, placement, prefill_sequences),
            "flexgen": _flexgen_pcie(inp, engine, prefill_sequences)}
