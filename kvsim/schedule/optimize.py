"""Choose the plan (p1, p2, α, β) that maximises throughput.

Exact on its candidate set: every (p1, p2, β) of the grid is scored, and α is not searched but
solved: GPU bytes fall linearly in α and step time never falls as α grows (every α-term is PCIe
traffic), so the best α for a given (p1, p2, β) is the least one that fits the GPU at every
step (``evaluate.best_alpha_times``; with an α grid, the least grid value above it). Phase I throughout is
optimal whenever it fits (any other plan only adds transfers or recomputation).
Then, unless the grid says not to, a local refinement that can only improve: p1 and p2 at single
steps around the best, and β continuously by scipy's bounded Brent search.

The weights: as many on the GPU as leave room for the leanest KV plan (p1 = 0, α = 1: all but the
recent window on the CPU). A streamed weight byte crosses PCIe every step; an offloaded KV byte
only when selected (with ALISA's 80% sparsity, about a tenth of the older tokens per step), so
KV goes first. The ALISA paper offloads weights like FlexGen when they do not fit (§6 setting).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DoesNotFit
from ..units import format_bytes
from .evaluate import Evaluation, best_alpha_times, evaluate
from .inputs import StepInputs
from .placement import geometry, gpu_bytes_linear

BETAS = (0.0, 0.2, 0.4, 0.6, 0.8)  # then refined continuously around the best
FULL_RESOLUTION_STEPS = 64  # up to this many generated tokens every step is a candidate
COARSE_POINTS = 16  # otherwise p1, p2 start on a grid of about this many steps
CHUNK_ELEMENTS = 1 << 21  # plans x steps scored at once


@dataclass(frozen=True)
class Grid:
    """The candidate set. ``p_step`` None: 1 up to FULL_RESOLUTION_STEPS, else gen/COARSE_POINTS.
    ``alphas`` None: α is continuous (solved exactly); a tuple restricts it to those values."""

    p_step: int | None = None
    betas: tuple = BETAS
    alphas: tuple | None = None
    refine: bool = True


@dataclass(frozen=True)
class Search:
    best: Evaluation
    candidates: int


def weights_on_gpu(inp: StepInputs) -> float:
    """The largest w in [0, 1] for which the leanest plan fits the GPU at every step."""
    G = inp.gen
    geo = geometry(inp, np.array([[0]]), np.array([[G + 1]]), np.array([[0.0]]))
    lean = [np.subtract(*gpu_bytes_linear(inp, geo, w)) for w in (0.0, 1.0)]  # U − V at α = 1
    slope = lean[1] - lean[0]  # w·(W − 2·layer)
    if np.all(lean[1] <= inp.gpu_capacity):
        return 1.0
    room = np.min((inp.gpu_capacity - lean[0]) / np.where(slope > 0, slope, np.inf))
    if room < 0 or not np.all(slope > 0):
        need = float(np.max(lean[0]))
        raise DoesNotFit(f"does not fit: even with every weight and all but the recent KV in CPU memory "
                         f"the GPU needs {format_bytes(need)}, {inp.hw.name} has {format_bytes(inp.gpu_capacity)}")
    return float(room) * (1 - 1e-6)  # a margin so that α = 1 is not a rounding error away


def score(inp: StepInputs, p1, p2, beta, w: float, alphas=None) -> Evaluation | None:
    """The best α for each (p1, p2, β) and the resulting plans' evaluation (None: none fits)."""
    p1, p2, beta = (np.atleast_1d(np.asarray(v)) for v in (p1, p2, beta))
    alpha, _ = best_alpha_times(inp, p1, p2, beta, w, alphas)
    ok = np.isfinite(alpha)
    if not ok.any():
        return None
    return evaluate(inp, p1[ok], p2[ok], alpha[ok], beta[ok], w)


def _best_of(inp, p1, p2, beta, w, alphas) -> tuple[Evaluation | None, int]:
    """Score plans in chunks; keep the single best feasible one."""
    best, per = None, max(1, CHUNK_ELEMENTS // inp.steps)
    for start in range(0, len(p1), per):
        part = slice(start, start + per)
        alpha, total = best_alpha_times(inp, p1[part], p2[part], beta[part], w, alphas)
        i = int(np.argmin(total))
        if not np.isfinite(total[i]) or (best is not None and total[i] >= best.total_s[0]):
            continue
        best = evaluate(inp, p1[part][i], p2[part][i], alpha[i], beta[part][i], w)
    return best, len(p1)


def candidates(gen: int, p_values, betas):
    """(p1, p2, β) arrays: β = 0 needs no p2 (G + 1); otherwise p1 <= p2 <= G."""
    never = gen + 1
    # latest phases first: among plans of equal time the first found wins, so ties go to the
    # plan that offloads and deletes later (transfers hidden under compute cost nothing)
    ps = np.unique(np.clip(np.asarray(list(p_values), dtype=int), 0, never))[::-1]
    rows = [(p1, never, 0.0) for p1 in ps] if 0.0 in betas else []
    for beta in sorted(b for b in betas if b > 0):
        rows += [(p1, p2, beta) for p1 in ps for p2 in ps if p1 <= p2 <= gen]
    if not rows:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    p1, p2, beta = map(np.asarray, zip(*rows))
    return p1.astype(int), p2.astype(int), beta.astype(float)


def grid_steps(gen: int, grid: Grid) -> int:
    if grid.p_step is not None:
        return max(1, int(grid.p_step))
    return 1 if gen <= FULL_RESOLUTION_STEPS else int(np.ceil(gen / COARSE_POINTS))


def _line(inp, best: Evaluation, w, alphas, which: str, values) -> tuple[Evaluation, int]:
    """Move one of p1, p2 over ``values`` with the rest of the best plan fixed."""
    G, p1, p2, beta = inp.gen, best.p1[0], best.p2[0], best.beta[0]
    values = np.unique(np.clip(np.asarray(values, dtype=int), 0, G + 1))
    if which == "p1":
        values = values[(values <= p2) | (beta == 0)]
        rows = (values, np.full_like(values, p2), np.full(len(values), beta))
    else:
        values = values[values >= p1]
        rows = (np.full_like(values, p1), values, np.full(len(values), beta))
    found, count = _best_of(inp, *rows, w, alphas)
    better = found is not None and found.throughput[0] > best.throughput[0]
    return (found if better else best), count


def _refine_steps(inp, best, w, alphas, step: int) -> tuple[Evaluation, int]:
    """p1 then p2 around the best, every ``stride`` steps within ±step, then every step."""
    total = 0
    for which in ("p1", "p2"):
        if which == "p2" and best.beta[0] == 0:
            continue
        span = step
        while span >= 1:
            centre = int(getattr(best, which)[0])
            stride = max(1, int(np.ceil(2 * span / 32)))
            best, count = _line(inp, best, w, alphas, which, np.arange(centre - span, centre + span + 1, stride))
            total += count
            span = stride if stride > 1 else 0
    return best, total


def _refine_beta(inp, best, w, alphas) -> tuple[Evaluation, int]:
    """β continuous around the best grid value (scipy bounded Brent), (p1, p2) fixed."""
    from scipy.optimize import minimize_scalar

    p1, p2, beta = best.p1[0], best.p2[0], best.beta[0]
    if beta == 0 or p2 > inp.gen:
        return best, 0
    calls = []

    def loss(value):
        found = score(inp, p1, p2, value, w, alphas)
        calls.append(found)
        return -float(found.throughput[0]) if found is not None else 0.0

    spread = BETAS[1]  # one grid step either side
    minimize_scalar(loss, bounds=(max(0.0, beta - spread), min(0.99, beta + spread)),
                    method="bounded", options={"xatol": 1e-3})
    found = [c for c in calls if c is not None and c.feasible[0]]
    top = max(found, key=lambda c: c.throughput[0], default=None)
    return (top if top is not None and top.throughput[0] > best.throughput[0] else best), len(calls)


def canonical(inp: StepInputs, best: Evaluation) -> Evaluation:
    """The same plan written plainly: a phase without effect never starts, and its fraction is 0."""
    G = inp.gen
    p1, p2, alpha, beta = int(best.p1[0]), int(best.p2[0]), float(best.alpha[0]), float(best.beta[0])
    if beta <= 0 or p2 > G:
        beta, p2 = 0.0, G + 1
    if alpha <= 0 or p1 > G:
        alpha, p1 = 0.0, min(p2, G + 1)
    return evaluate(inp, p1, p2, alpha, beta, best.weights_gpu)


def optimize(inp: StepInputs, grid: Grid = Grid()) -> Search:
    G = inp.gen
    phase_one = evaluate(inp, G + 1, G + 1, 0.0, 0.0, 1.0)
    if phase_one.feasible[0]:
        return Search(phase_one, 1)
    w, step = weights_on_gpu(inp), grid_steps(G, grid)
    best, count = _best_of(inp, *candidates(G, list(range(0, G + 1, step)) + [G, G + 1], grid.betas),
                           w, grid.alphas)
    if best is None:
        raise DoesNotFit(f"does not fit: no three-phase plan keeps batch {inp.batch} within "
                         f"{format_bytes(inp.gpu_capacity)} of GPU and {format_bytes(inp.cpu_capacity)} "
                         f"of CPU memory on {inp.hw.name} (try a smaller batch)")
    if grid.refine:
        for _ in range(2):
            before = best.throughput[0]
            best, more = _refine_steps(inp, best, w, grid.alphas, step)
            best, extra = _refine_beta(inp, best, w, grid.alphas)
            count += more + extra
            if best.throughput[0] <= before:
                break
    return Search(canonical(inp, best), count)
