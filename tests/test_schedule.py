"""The three-phase schedule (kvsim.schedule): capacity at every step, the limits the issue names
(infinite GPU memory, no CPU memory, no PCIe), the optimizer against exhaustive search, and the
FlexGen-style and vLLM-style baselines."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kvsim.errors import KvsimError
from kvsim.hardware import Sourced
from kvsim.profiles import load_profile
from kvsim.methods import get_method
from kvsim.models import load_model
from kvsim.schedule import Grid, evaluate, flexgen, optimize, schedule, step_inputs, vllm
from kvsim.schedule.baselines import _lp_rows

V100 = load_profile("v100-32gb")


def machine(gpu=None, cpu=None, pcie=None, base=V100):
    """A variant of a profile with other capacities or PCIe bandwidth (bytes, bytes/s)."""
    update = {}
    if gpu is not None:
        update["memory"] = base.memory.model_copy(update={"capacity_bytes": Sourced(value=gpu, source="test")})
    if cpu is not None:
        update["host"] = base.host.model_copy(update={"memory_bytes": Sourced(value=cpu, source="test")})
    if pcie is not None:
        link = {"h2d_Bps": Sourced(value=pcie, source="test"), "d2h_Bps": Sourced(value=pcie, source="test")}
        update["host_link"] = base.host_link.model_copy(update=link)
    return base.model_copy(update=update)


def inputs(hw=V100, model="opt-6.7b", method="alisa", batch=16, prompt=128, gen=16, kv_dtype="fp16"):
    return step_inputs(get_method(method), load_model(model), hw, batch, prompt, gen, "fp16", kv_dtype)


def tight(model="opt-6.7b", method="alisa", batch=16, prompt=128, gen=16, squeeze=0.3, **kw):
    """A machine whose GPU holds Phase I until about (1 − squeeze) of the final KV."""
    probe = inputs(model=model, method=method, batch=batch, prompt=prompt, gen=gen)
    peak = float(evaluate(probe, gen + 1, gen + 1, 0.0, 0.0).gpu_bytes.max())
    hw = machine(gpu=peak - squeeze * probe.rho * probe.n[-1], **kw)
    return inputs(hw=hw, model=model, method=method, batch=batch, prompt=prompt, gen=gen)


def exhaustive(inp, alphas, betas, weights_gpu):
    """Every (p1, p2, α, β) of the grid through the plain time model; the best throughput."""
    G = inp.gen
    plans = [(p1, p2, a, b) for b in betas for a in alphas for p1 in range(G + 2)
             for p2 in ([G + 1] if b == 0 else range(p1, G + 2))]
    p1, p2, a, b = map(np.asarray, zip(*plans))
    found = evaluate(inp, p1, p2, a, b, weights_gpu)
    return float(found.throughput.max())


@pytest.mark.parametrize("method", ["alisa", "dense"])
@pytest.mark.parametrize("squeeze", [0.15, 0.45])
def test_optimizer_equals_exhaustive_search(method, squeeze):
    inp = tight(method=method, gen=10, squeeze=squeeze)
    alphas, betas = tuple(np.linspace(0, 1, 21)), (0.0, 0.2, 0.4, 0.6, 0.8)
    on_grid = optimize(inp, Grid(p_step=1, betas=betas, alphas=alphas, refine=False)).best
    best = exhaustive(inp, alphas, betas, on_grid.weights_gpu)
    assert best > 0 and on_grid.feasible[0]
    assert on_grid.throughput[0] == pytest.approx(best, rel=1e-12)
    free = optimize(inp).best  # continuous α and β, refined: never worse than the grid
    assert free.throughput[0] >= best * (1 - 1e-12)


def test_optimizer_matches_exhaustive_with_streamed_weights():
    hw = machine(gpu=12e9)  # OPT-6.7B's 13.4 GB of fp16 weights do not fit
    inp = inputs(hw=hw, batch=4, gen=8)
    alphas, betas = tuple(np.linspace(0, 1, 11)), (0.0, 0.4, 0.8)
    on_grid = optimize(inp, Grid(p_step=1, betas=betas, alphas=alphas, refine=False)).best
    assert 0 < on_grid.weights_gpu < 1
    assert on_grid.throughput[0] == pytest.approx(exhaustive(inp, alphas, betas, on_grid.weights_gpu), rel=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(squeeze=st.floats(0.0, 1.5), cpu=st.sampled_from([0.0, 2e9, 16e9, 512e9]),
       pcie=st.floats(1e9, 32e9), model=st.sampled_from(["opt-6.7b", "llama-2-7b", "llama-3-8b"]),
       method=st.sampled_from(["alisa", "dense"]), batch=st.integers(1, 48),
       prompt=st.integers(8, 512), gen=st.integers(2, 40), int8=st.booleans())
def test_capacity_is_never_exceeded(squeeze, cpu, pcie, model, method, batch, prompt, gen, int8):
    """GPU memory from ample to far below the Phase-I peak (squeeze: share of the final KV that
    must go), CPU memory from none to plenty, any PCIe bandwidth."""
    kv = "int8" if int8 else "fp16"
    probe = inputs(V100, model, method, batch, prompt, gen, kv)
    peak = float(evaluate(probe, gen + 1, gen + 1, 0.0, 0.0).gpu_bytes.max())
    gpu = max(peak - squeeze * probe.rho * probe.n[-1], 1.5e9)
    inp = inputs(machine(gpu=gpu, cpu=cpu, pcie=pcie), model, method, batch, prompt, gen, kv)
    try:
        best = optimize(inp).best
    except KvsimError as exc:
        assert str(exc).startswith("does not fit")
        return
    assert best.feasible[0] and best.throughput[0] > 0
    assert np.all(best.gpu_bytes <= gpu) and np.all(best.cpu_bytes <= cpu)
    assert np.all(best.cpu_kv >= 0) and np.all(best.gpu_kv > 0) and np.all(best.step_s > 0)
    plan = best.placement(0)
    assert 0 <= plan.alpha <= 1 and 0 <= plan.beta < 1 and 0 <= plan.weights_gpu <= 1
    assert plan.p1 <= plan.p2 or plan.beta == 0


def test_infinite_gpu_memory_keeps_phase_one_throughout():
    G = 64
    for method in ("alisa", "dense"):
        inp = inputs(hw=machine(gpu=1e18), method=method, batch=64, prompt=512, gen=G)
        plan = optimize(inp).best.placement(0)
        assert (plan.p1, plan.p2, plan.alpha, plan.beta, plan.weights_gpu) == (G + 1, G + 1, 0.0, 0.0, 1.0)
    result = schedule(machine(gpu=1e18), "opt-6.7b", "dense", batch=64, prompt=512, gen=G)
    assert float(result.best.cpu_bytes.max()) == 0.0
    for baseline in result.baselines.values():  # everything on the GPU: the same time model
        assert baseline.throughput_tok_s == pytest.approx(result.throughput, rel=1e-6)


def test_zero_cpu_memory_never_offloads():
    inp = tight(gen=32, squeeze=0.2, cpu=0.0)  # OPT: x is half a K/V row, so deletion frees room
    best = optimize(inp).best
    plan = best.placement(0)
    assert plan.alpha == 0 and plan.weights_gpu == 1 and plan.beta > 0
    assert float(best.cpu_bytes.max()) == 0 and float(best.h2d.sum()) == 0
    with pytest.raises(KvsimError, match="does not fit"):  # and with more to hold, nothing fits
        optimize(tight(gen=32, squeeze=0.9, cpu=0.0))


def test_no_pcie_bandwidth_recomputes_instead_of_offloading():
    slow = dict(pcie=1e-3)  # bytes/s: the limit PCIe -> 0
    best = optimize(tight(gen=32, squeeze=0.2, **slow)).best
    assert best.placement(0).alpha == 0 and best.placement(0).beta > 0 and float(best.h2d.sum()) == 0
    hw = machine(gpu=float(tight(gen=32, squeeze=0.2).gpu_capacity), **slow)
    auto = schedule(hw, "opt-6.7b", "alisa", batch="auto", prompt=128, gen=32, baselines=False, max_batch=64)
    assert auto.best.placement(0).alpha == 0 and float(auto.best.h2d.sum()) == 0
    fast = schedule(machine(gpu=hw.memory.capacity_bytes.value), "opt-6.7b", "alisa", batch="auto",
                    prompt=128, gen=32, baselines=False, max_batch=64)
    assert fast.throughput >= auto.throughput


def test_int8_kv_needs_less_offload():
    hw = tight(gen=32, squeeze=0.3).hw
    fp16 = optimize(inputs(hw=hw, gen=32)).best
    int8 = optimize(inputs(hw=hw, gen=32, kv_dtype="int8")).best
    assert float(int8.cpu_kv.max()) < float(fp16.cpu_kv.max()) or int8.placement(0).p1 == 33
    assert int8.throughput[0] >= fp16.throughput[0] * 0.99


def test_flexgen_lp_is_optimal_and_fits():
    inp = tight(method="dense", gen=24, squeeze=0.5)
    base = flexgen(inp)
    d = base.details
    x = np.array([d["weights_gpu"], d["kv_gpu"], d["activations_gpu"]])
    dense = step_inputs(get_method("dense"), inp.model, inp.hw, inp.batch, inp.prompt, inp.gen, "fp16", "fp16")
    rows, memory = _lp_rows(dense, d["attention"] == "cpu attention")
    for *coefs, bound in memory:  # every step within GPU and CPU memory
        assert np.all(np.column_stack(coefs) @ x <= bound + 1e-3)
    steps = lambda y: np.max([np.column_stack(c) @ y - b for *c, b in rows], axis=0)  # noqa: E731
    assert steps(x).sum() == pytest.approx(base.total_s, rel=1e-6)
    grid = [steps(np.array([w, c, 1.0])).sum() for w in np.linspace(0, 1, 11) for c in np.linspace(0, 1, 11)
            if all(np.all(np.column_stack(m[:3]) @ np.array([w, c, 1.0]) <= m[3]) for m in memory)]
    assert base.total_s <= min(grid) * (1 + 1e-9)


def test_vllm_runs_the_largest_batch_that_fits_in_waves():
    inp = tight(method="dense", batch=16, gen=24, squeeze=0.5)
    base = vllm(inp)
    c = base.details["concurrent"]
    assert 1 <= c < 16 and base.details["waves"] == -(-16 // c)
    fits = lambda b: bool(evaluate(step_inputs(get_method("dense"), inp.model, inp.hw, b, inp.prompt, inp.gen,
                                               "fp16", "fp16"), 25, 25, 0.0, 0.0).feasible[0])  # noqa: E731
    assert fits(c) and not fits(c + 1)


def test_alisa_beats_the_baselines_where_memory_binds():
    result = schedule("v100-32gb", "opt-13b", "alisa", batch=16, prompt=128, gen=128)
    assert result.throughput > result.baselines["flexgen"].throughput_tok_s
    assert result.throughput > result.baselines["vllm"].throughput_tok_s


def test_bad_input_is_one_line():
    with pytest.raises(KvsimError, match="not a GPU with a host link"):
        schedule("epyc-7763", "opt-6.7b", "alisa", batch=1, prompt=16, gen=4)
    with pytest.raises(KvsimError, match="kv-bits"):
        schedule("v100-32gb", "opt-6.7b", "alisa", batch=1, prompt=16, gen=4, kv_bits=4)
    with pytest.raises(KvsimError, match="does not fit"):
        schedule(machine(gpu=0.5e9), "opt-6.7b", "alisa", batch=1, prompt=16, gen=4)
