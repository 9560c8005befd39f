"""What the planner computes once and shares: costs between hardware (plan_memo), decoder ops
between methods (Workload.once), and op times between options (plan_time); each the numbers
computing it afresh gives."""
import numpy as np
import pytest

from kvsim.decoder import layer_ops
from kvsim.errors import KvsimError
from kvsim.methods import get_method
from kvsim.methods.base import Method
from kvsim.models import load_model
from kvsim.plan_memo import CostMemo
from kvsim.plan_time import time_together
from kvsim.predict import step_cost
from kvsim.profiles import load_profile
from kvsim.roofline import step_time
from kvsim.workload import Workload

WL = dict(seq=32768.0, batch=np.arange(1.0, 9), dtype="bf16", kv_dtype="bf16")


def _with_workspace(hw, value):
    return hw.model_copy(update={"workspace_bytes": hw.workspace_bytes.model_copy(update={"value": value})})


def _same_cost(a, b):
    assert np.array_equal(a.gpu_bytes, b.gpu_bytes) and np.array_equal(a.host_resident_bytes, b.host_resident_bytes)
    for quantity in ("flops", "hbm_read", "hbm_write", "launches", "comm_bytes"):
        assert np.array_equal(a.total(quantity), b.total(quantity))


def test_cost_memo_fills_in_each_workspace_on_the_same_ops():
    model, method, h100 = load_model("llama-3.1-8b"), get_method("sparq"), load_profile("h100")
    roomy, wl, memo = _with_workspace(h100, 3e9), Workload(**WL), CostMemo()
    first, other = (memo.cost(method, model, hw, wl, 2, ("sparq", 2)) for hw in (h100, roomy))
    assert other.ops is first.ops and other is not first  # the ops shared, the residents not
    for hw, cost in ((h100, first), (roomy, other)):
        _same_cost(cost, step_cost(method, model, hw, wl, 2))


def test_cost_memo_costs_again_where_a_read_number_is_computed_with(monkeypatch):
    base = Method.base_resident

    def doubled(self, model, hw, wl, tokens=1.0):  # computes with the workspace it reads
        resident = base(self, model, hw, wl, tokens)
        return resident[:-1] + [type(resident[-1])("workspace", gpu=2.0 * hw.workspace_bytes.value)]
    monkeypatch.setattr(Method, "base_resident", doubled)
    model, method, h100 = load_model("llama-3.1-8b"), get_method("dense"), load_profile("h100")
    roomy, wl, memo = _with_workspace(h100, 3e9), Workload(**WL), CostMemo()
    first = memo.cost(method, model, h100, wl, 1, ("dense", 1))
    assert memo.cost(method, model, h100, wl, 1, ("dense", 1)) is first
    other = memo.cost(method, model, roomy, wl, 1, ("dense", 1))
    for hw, cost in ((h100, first), (roomy, other)):
        _same_cost(cost, step_cost(method, model, hw, wl, 1))
    assert float(other.gpu_bytes[0] - first.gpu_bytes[0]) == 2 * (3e9 - h100.workspace_bytes.value)


def test_decoder_ops_made_once_per_workload():
    model, wl = load_model("llama-3.1-70b").sharded(4), Workload(**WL)
    once = layer_ops(model, wl)
    assert all(a is b for a, b in zip(once, layer_ops(model, wl)))  # the same ops again
    fresh = layer_ops(model, Workload(**WL))
    for a, b in zip(once, fresh):
        assert a is not b and a.name == b.name and np.array_equal(a.flops, b.flops)
        assert np.array_equal(a.hbm_read, b.hbm_read) and np.array_equal(a.launches, b.launches)
    assert len(layer_ops(model, wl, rotate_keys=False)) == len(once) - 1  # other arguments: other ops


@pytest.mark.parametrize("hw", ["gh200", "h100"])
def test_times_together_fail_as_alone(hw):
    """An option whose GPUs span nodes fails with the error timing it alone gives; the options
    timed beside it keep their latencies."""
    hw, model, wl = load_profile(hw), load_model("llama-3.1-70b"), Workload(**WL)
    configs = [("dense", 1, 5), ("quest", 4, 3), ("sparq", 2, 8), ("h2o", 8, 2)]
    costs = [step_cost(get_method(m), model, hw, wl, gpus) for m, gpus, _ in configs]
    together = time_together(hw, costs, [size for *_, size in configs])
    for cost, (*_, size), mine in zip(costs, configs, together):
        try:
            alone = np.broadcast_to(step_time(cost, hw).latency_s, wl.batch.shape)[:size]
        except KvsimError as exc:
            assert isinstance(mine, KvsimError) and str(mine) == str(exc)
        else:
            assert np.array_equal(mine, alone)
    assert any(isinstance(m, KvsimError) for m in together) == (hw.name == "gh200")
