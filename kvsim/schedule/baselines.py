"""The baselines ALISA compares against, in the same time model (dense attention, 16-bit KV).

FlexGen-style (Sheng et al., arXiv 2303.06865 §4.3): static fractions of the weights (wg), the KV
cache (cg) and the activations (hg) on the GPU, the rest in CPU memory, chosen by a linear
program that minimises the generation time under peak GPU and CPU memory at every step. Each
step takes the longest of compute, CPU->GPU and GPU->CPU traffic (all overlapped:
T_gen = max(ctog, gtoc, comp), disk terms 0). Attention over the CPU part of the cache either
runs on the CPU ("CPU delegation", §4.2; FlexGen's --cpu-cache-compute), here memory-bound at
host DRAM bandwidth, which is generous: FlexGen's fitted CPU attention was far slower; or its
K/V cross PCIe each step. Both are solved and the faster is reported. The streamed weights need
a GPU buffer of 2·(1 − wg) layers (FlexGen's cost model, GPU working set). One GPU batch of B.
vLLM-style (Kwon et al., SOSP'23): everything on the GPU, dense attention; the batch is the most
sequences whose KV at the final length fits; the rest wait and run as a later wave.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..methods import get_method
from ..predict import step_cost
from ..roofline import step_time
from .evaluate import evaluate
from .inputs import StepInputs, step_inputs


@dataclass(frozen=True)
class Baseline:
    name: str
    throughput_tok_s: float
    total_s: float
    details: dict = field(default_factory=dict)
    note: str = ""


def _dense_inputs(inp: StepInputs, batch: int, engine: str = "graphs") -> StepInputs:
    wl = inp.wl
    return step_inputs(get_method("dense"), inp.model, inp.hw, batch, inp.prompt, inp.gen, wl.dtype, wl.dtype,
                       engine)


def _attention_s(inp: StepInputs) -> np.ndarray:
    """GPU time of attention over the cache at each step (0 at prefill: nothing cached is read)."""
    decode = step_cost(get_method("dense"), inp.model, inp.hw, inp.wl.with_(seq=inp.n[1:]))
    timed = [t.time_s for t in step_time(decode, inp.hw).ops if t.op.kind == "attention"]
    return np.concatenate([[0.0], sum(timed, np.zeros(inp.gen))])


def _lp_rows(inp: StepInputs, delegate: bool):
    """Per step j, the LP's coefficients on (wg, cg, hg) and right-hand sides, as arrays."""
    S, L, link = inp.steps, inp.model.n_layers, inp.hw.host_link
    h2d, d2h = link.h2d_Bps.value * link.efficiency.value, link.d2h_Bps.value * link.efficiency.value
    kv = inp.rho * inp.n  # the whole cache at step j (bytes)
    new_kv = np.concatenate([[kv[0]], np.full(S - 1, inp.rho)])  # the prompt's, then one token's
    hidden = inp.eta * np.concatenate([[inp.prompt], np.ones(S - 1)])  # layer inputs/outputs, L layers
    attn = _attention_s(inp)
    host = kv / inp.hw.host.bandwidth_Bps.value * (np.arange(S) > 0)  # CPU attention reads its KV
    pcie_kv = 0.0 if delegate else 1.0
    zero = np.zeros(S)
    rows = [  # (coef wg, coef cg, coef hg, rhs) for "−t_j + coefs·x <= rhs"
        (zero, attn - host if delegate else zero, zero,
         -(inp.compute_s - attn + (host if delegate else attn))),  # comp_j
        (-inp.weights / h2d + zero, -pcie_kv * kv * (np.arange(S) > 0) / h2d, -hidden / h2d,
         -(inp.weights + hidden + pcie_kv * kv * (np.arange(S) > 0)) / h2d),  # ctog_j
        (zero, -new_kv / d2h, -hidden / d2h, -(new_kv + hidden) / d2h),  # gtoc_j
    ]
    staging = 0.0 if delegate else 2.0 / L  # a 2-layer landing buffer for loaded K/V
    memory = [  # "coefs·x <= rhs", no t_j
        (inp.weights - 2 * inp.layer_weights + zero, kv * (1 - staging), inp.eta / L + zero,
         inp.gpu_capacity - 2 * inp.layer_weights - inp.fixed_gpu - staging * kv),
        (-inp.weights + zero, -kv, -inp.eta / L + zero, inp.cpu_capacity - inp.weights - kv - inp.eta / L),
    ]
    return rows, memory


def _solve_lp(inp: StepInputs, delegate: bool):
    """min Σ t_j over x = (wg, cg, hg, t_0..t_G); None when no placement fits."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, csr_matrix, hstack, identity, vstack

    S = inp.steps
    rows, memory = _lp_rows(inp, delegate)
    blocks = [hstack([coo_matrix(np.column_stack(three)), -identity(S)]) for *three, _ in rows]
    blocks += [hstack([coo_matrix(np.column_stack(three)), csr_matrix((S, S))]) for *three, _ in memory]
    rhs = np.concatenate([bound for *_, bound in rows + memory])
    cost = np.concatenate([np.zeros(3), np.ones(S)])
    result = linprog(cost, A_ub=vstack(blocks).tocsr(), b_ub=rhs,
                     bounds=[(0, 1)] * 3 + [(0, None)] * S, method="highs")
    return result if result.status == 0 else None


def flexgen(inp: StepInputs) -> Baseline:
    """FlexGen-style placement for the same batch, prompt and generation (dense, 16-bit KV)."""
    dense = _dense_inputs(inp, inp.batch)
    solved = {mode: _solve_lp(dense, mode == "cpu attention") for mode in ("cpu attention", "pcie kv")}
    found = {mode: r for mode, r in solved.items() if r is not None}
    if not found:
        return Baseline("flexgen", 0.0, float("inf"), note="no placement fits GPU and CPU memory")
    mode, best = min(found.items(), key=lambda item: item[1].fun)
    wg, cg, hg = (float(v) for v in best.x[:3])
    modes = {m: (dense.decode_tokens / r.fun if r is not None else 0.0) for m, r in solved.items()}
    return Baseline("flexgen", dense.decode_tokens / best.fun, float(best.fun),
                    details={"weights_gpu": wg, "kv_gpu": cg, "activations_gpu": hg, "attention": mode,
                             "throughput_by_attention": modes, "step_s": best.x[3:]})


def _fits(inp: StepInputs) -> bool:
    return bool(evaluate(inp, inp.gen + 1, inp.gen + 1, 0.0, 0.0).feasible[0])


def vllm(inp: StepInputs) -> Baseline:
    """vLLM-style: the largest batch c <= B that fits whole on the GPU runs; the others wait."""
    B = inp.batch
    lo, hi = 0, B  # largest c in [1, B] that fits, by bisection (more sequences never need less)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _fits(_dense_inputs(inp, mid)) else (lo, mid - 1)
    if lo == 0:
        return Baseline("vllm", 0.0, float("inf"), note="the weights and one sequence do not fit on the GPU")
    waves, rest = divmod(B, lo)
    total = waves * float(evaluate(_dense_inputs(inp, lo), inp.gen + 1, inp.gen + 1, 0.0, 0.0).total_s[0])
    if rest:
        total += float(evaluate(_dense_inputs(inp, rest), inp.gen + 1, inp.gen + 1, 0.0, 0.0).total_s[0])
    return Baseline("vllm", B * inp.gen / total, total,
                    details={"concurrent": lo, "waves": waves + (1 if rest else 0)})
