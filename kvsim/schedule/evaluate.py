"""A batch of plans through the time model: bytes on each side and time at every step.

Step time (kvsim.roofline's overlap rule): the compute stream (the method's ops, then the
recomputation, then any loads that must wait for the step's selection) against the copy stream
(prefetched loads, the weight stream and offload write-backs, full duplex); the step takes the
longer. Throughput = B·G / (prefill + Σ decode steps), as FlexGen reports generation throughput.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..host_costs import host_issue_time
from ..roofline import op_time
from .inputs import StepInputs
from .ops import step_ops
from .placement import Placement, cpu_bytes_linear, geometry, gpu_bytes_linear, new_offloads

ALPHA_SLACK = 1e-9  # α is raised by this relative margin so rounding never overfills the GPU


@dataclass(frozen=True)
class Evaluation:
    p1: np.ndarray
    p2: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    weights_gpu: float
    step_s: np.ndarray  # (plans, steps)
    compute_s: np.ndarray
    copy_s: np.ndarray
    gpu_bytes: np.ndarray
    cpu_bytes: np.ndarray
    gpu_kv: np.ndarray  # K/V rows + kept layer inputs + metadata on the GPU
    cpu_kv: np.ndarray
    h2d: np.ndarray
    d2h: np.ndarray
    recompute_rows: np.ndarray  # per sequence and layer
    feasible: np.ndarray  # (plans,)
    total_s: np.ndarray
    throughput: np.ndarray  # generated tokens per second; 0 where the plan does not fit

    def placement(self, index: int = 0) -> Placement:
        return Placement(int(self.p1[index]), int(self.p2[index]), float(self.alpha[index]),
                    float(self.beta[index]), float(self.weights_gpu))


def _column(value, dtype=float) -> np.ndarray:
    return np.atleast_1d(np.asarray(value, dtype=dtype))[:, None]


def _least_alpha(inp: StepInputs, U, V, C0, C1) -> np.ndarray:
    over = U - inp.gpu_capacity
    ratio = np.divide(over, V, out=np.full_like(over, np.inf), where=V > 0)
    need = np.where(over > 0, ratio, 0.0).max(axis=-1)
    need = np.where(need > 0, need * (1 + ALPHA_SLACK), 0.0)
    need = np.where(need <= 1 + 2 * ALPHA_SLACK, np.minimum(need, 1.0), need)  # α = 1 is exact
    cpu_ok = np.all(C0 + np.minimum(need, 1.0)[:, None] * C1 <= inp.cpu_capacity, axis=-1)
    return np.where((need <= 1.0) & cpu_ok, need, np.inf)


def _linear_bytes(inp: StepInputs, geo, weights_gpu):
    U, V = gpu_bytes_linear(inp, geo, weights_gpu)
    C0, C1 = cpu_bytes_linear(inp, geo, weights_gpu)
    return np.broadcast_arrays(U, V, C0, C1)


def _snap(alpha: np.ndarray, alphas) -> np.ndarray:
    """With an α grid: the least grid value >= the least α that fits (inf where none)."""
    if alphas is None:
        return alpha
    grid = np.sort(np.asarray(alphas, dtype=float))
    index = np.searchsorted(grid, alpha, side="left")
    return np.where(np.isfinite(alpha) & (index < len(grid)), grid[np.minimum(index, len(grid) - 1)], np.inf)


def best_alpha_times(inp: StepInputs, p1, p2, beta, weights_gpu: float, alphas=None):
    """For each (p1, p2, β): the best α (inf: nothing fits) and the total time it gives
    (inf likewise). One geometry serves the capacity solve; only plans that fit are timed."""
    p1, p2, beta = (_column(v, t) for v, t in ((p1, int), (p2, int), (beta, float)))
    geo = geometry(inp, p1, p2, beta)
    U, V, C0, C1 = _linear_bytes(inp, geo, weights_gpu)
    alpha = _snap(_least_alpha(inp, U, V, C0, C1), alphas)
    a = np.where(np.isfinite(alpha), alpha, 0.0)[:, None]
    fits = np.isfinite(alpha) & np.all(C0 + a * C1 <= inp.cpu_capacity, axis=-1)
    fits &= np.all(U - a * V <= inp.gpu_capacity, axis=-1)
    total = np.full(len(alpha), np.inf)
    if fits.any():
        total[fits] = _times(inp, geo.subset(fits), a[fits], weights_gpu)[0].sum(axis=-1)
    return np.where(fits, alpha, np.inf), total


def _times(inp: StepInputs, geo, alpha, weights_gpu):
    """Compute and copy stream per step. Issued eagerly, the host issues the schedule's own ops
    too, in line with the step's: a compute-stream op takes the longer of its GPU time and its
    host time, a copy-stream op adds its host time to the compute stream's."""
    compute = inp.compute_s + 0.0 * alpha
    copy = inp.copy_s + 0.0 * alpha
    for op in step_ops(inp, geo, alpha, weights_gpu):
        timed = op_time(op, inp.hw).time_s
        host = host_issue_time(op, inp.hw) if inp.engine == "eager" else 0.0
        if op.stream == "copy":
            copy, compute = copy + timed, compute + host
        else:
            compute = compute + np.maximum(timed, host)
    return np.maximum(compute, copy), compute, copy


def evaluate(inp: StepInputs, p1, p2, alpha, beta, weights_gpu: float = 1.0) -> Evaluation:
    """Every plan (p1[i], p2[i], alpha[i], beta[i]) at every step; arguments broadcast."""
    p1, p2, alpha, beta = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v)) for v in (p1, p2, alpha, beta)))
    a = _column(alpha)
    geo = geometry(inp, _column(p1, int), _column(p2, int), _column(beta))
    U, V = gpu_bytes_linear(inp, geo, weights_gpu)
    C0, C1 = cpu_bytes_linear(inp, geo, weights_gpu)
    gpu, cpu = U - a * V, C0 + a * C1
    step, compute, copy = _times(inp, geo, a, weights_gpu)
    feasible = np.all(gpu <= inp.gpu_capacity, axis=-1) & np.all(cpu <= inp.cpu_capacity, axis=-1)
    total = step.sum(axis=-1)
    live_gpu = inp.n - geo.deleted - a * geo.offloadable
    x_gpu = geo.x_held - a * geo.x_offloadable
    load = a * (inp.rho * geo.load_rows + inp.eta * geo.load_x_rows)
    new_rows, new_x_rows = new_offloads(inp, geo)
    return Evaluation(
        p1=p1.astype(int), p2=p2.astype(int), alpha=alpha.astype(float), beta=beta.astype(float),
        weights_gpu=float(weights_gpu), step_s=step, compute_s=compute, copy_s=copy,
        gpu_bytes=gpu, cpu_bytes=cpu,
        gpu_kv=inp.rho * live_gpu + inp.eta * x_gpu + inp.meta_gpu,
        cpu_kv=a * C1 + 0.0 * gpu,
        h2d=load + (1.0 - weights_gpu) * inp.weights,
        d2h=a * (inp.rho * new_rows + inp.eta * new_x_rows) + 0.0 * gpu,
        recompute_rows=geo.recompute_rows + 0.0 * gpu, feasible=feasible, total_s=total,
        throughput=np.where(feasible, inp.decode_tokens / total, 0.0))
