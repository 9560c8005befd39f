"""Interconnect topologies (switch, mesh, bridged pairs, PCIe), the ring collective's time by
hand, GPU counts a node cannot hold, and the hardware profiles added for the devices people ask about."""
import subprocess
import sys

import numpy as np
import pytest

from kvsim.errors import KvsimError
from kvsim.profiles import list_profiles, load_profile
from kvsim.methods import METHODS
from kvsim.models import PRESETS
from kvsim.plan import evaluate
from kvsim.predict import predict
from kvsim.topology import collective_time

M8 = PRESETS["llama-3.1-8b"]
NEW = ["l4", "a10g", "t4", "rtx-a6000", "rtx-6000-ada", "a100-80gb-pcie", "v100-16gb-sxm", "b200", "gh200", "mi300x"]


def _allreduce(pred):
    return next(t for t in pred.timing.ops if t.op.name == "layers/allreduce")


def _by_hand(link_bw, link_eff, step_s, call_s, gpus, batch, model=M8):
    """2 all-reduces per layer of one bf16 hidden state per sequence, each 2(N−1) ring steps."""
    message = batch * model.d_model * 2
    calls = 2 * model.n_layers
    sent = calls * 2 * (gpus - 1) / gpus * message
    return sent / (link_bw * link_eff) + calls * (call_s + 2 * (gpus - 1) * step_s)


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_switch_ring_time_by_hand(gpus):
    hw = load_profile("h100-sxm")
    link = hw.interconnect
    pred = predict(hw, seq=4096, batch=16, gpus=gpus)
    want = _by_hand(link.bandwidth_Bps.value, link.efficiency.value, link.step_latency_s.value,
                    link.latency_s.value, gpus, 16)
    assert float(_allreduce(pred).floors["interconnect"]) == pytest.approx(want, rel=1e-12)


def test_bridged_pairs_use_the_bridge_for_two_and_pcie_beyond():
    hw = load_profile("rtx-3090")
    link, pcie = hw.interconnect, hw.interconnect.beyond_pair
    two = predict(hw, seq=4096, batch=16, gpus=2)
    four = predict(hw, seq=4096, batch=16, gpus=4)
    assert float(_allreduce(two).floors["interconnect"]) == pytest.approx(_by_hand(
        link.bandwidth_Bps.value, link.efficiency.value, link.step_latency_s.value, link.latency_s.value, 2, 16))
    # a ring of 4 crosses the bridge inside each pair and PCIe between them: PCIe sets the pace
    assert float(_allreduce(four).floors["interconnect"]) == pytest.approx(_by_hand(
        pcie.bandwidth_Bps.value, pcie.efficiency.value, pcie.step_latency_s.value, link.latency_s.value, 4, 16))


def test_mesh_runs_one_ring_per_link():
    hw = load_profile("mi300x")
    link = hw.interconnect
    for gpus in (2, 4, 8):
        pred = predict(hw, seq=4096, batch=16, gpus=gpus)
        want = _by_hand((gpus - 1) * link.bandwidth_Bps.value, link.efficiency.value,
                        link.step_latency_s.value, link.latency_s.value, gpus, 16)
        assert float(_allreduce(pred).floors["interconnect"]) == pytest.approx(want)


def _variant(topology):
    """One profile, its NVLink bridge and its PCIe link, arranged three ways."""
    hw = load_profile("rtx-a6000")
    bridge, pcie = hw.interconnect, hw.interconnect.beyond_pair
    fields = {"switch": dict(topology="switch", beyond_pair=None),
              "pairs": {},
              "pcie": dict(topology="pcie", beyond_pair=None, bandwidth_Bps=pcie.bandwidth_Bps,
                           efficiency=pcie.efficiency, step_latency_s=pcie.step_latency_s)}[topology]
    return hw.model_copy(update={"interconnect": bridge.model_copy(update=fields)})


@pytest.mark.parametrize("batch", [1, 64])
def test_switch_pairs_pcie_ordering(batch):
    message = batch * M8.d_model * 2.0
    t = {(name, gpus): float(collective_time(2 * (gpus - 1) / gpus * message, 1, 2 * (gpus - 1), gpus, _variant(name)))
         for name in ("switch", "pairs", "pcie") for gpus in (2, 4, 8)}
    assert t["switch", 2] == t["pairs", 2] < t["pcie", 2]  # two GPUs: the bridge is the whole ring
    for gpus in (4, 8):  # beyond a pair the ring crosses PCIe, so pairs are no faster than PCIe alone
        assert t["switch", gpus] < t["pairs", gpus] == t["pcie", gpus]
    assert t["switch", 2] < t["switch", 4] < t["switch", 8]  # more steps and a larger share sent


def test_beyond_one_node_is_refused():
    with pytest.raises(KvsimError, match="one node holds 8 GPUs; --gpus 16 spans several nodes"):
        predict("h100", model="llama-3.1-70b", seq=4096, gpus=16)
    with pytest.raises(KvsimError, match="one node holds 8 GPUs; --gpus 64"):
        predict("h100", model="llama-3.1-70b", seq=4096, gpus=64)
    with pytest.raises(KvsimError, match="one node holds 2 GPUs"):
        predict("gh200", model="llama-3.1-70b", seq=4096, gpus=4)
    option = evaluate("h100", "dense", 4096, model="llama-3.1-70b", gpus=16)
    assert not option.fits and not option.meets_slo and "several nodes" in option.note


@pytest.mark.parametrize("hw", ["epyc", "ryzen-9-7950x"])
def test_cpu_profiles_refuse_tensor_parallelism(hw):
    with pytest.raises(KvsimError, match="is a CPU profile"):
        predict(hw, seq=4096, gpus=2)
    option = evaluate(hw, "dense", 4096, gpus=2)
    assert not option.fits and not option.meets_slo and option.tpot_s is None
    assert float(predict(hw, seq=4096, gpus=1).latency_s) > 0  # one device still answers


def test_cli_refuses_in_one_line(tmp_path):
    for argv in (["predict", "--hw", "epyc", "--seq", "4k", "--gpus", "2"],
                 ["predict", "--hw", "h100", "--model", "llama-3.1-70b", "--seq", "4k", "--gpus", "64"]):
        run = subprocess.run([sys.executable, "-m", "kvsim", *argv], capture_output=True, text=True)
        assert run.returncode == 2, run.stdout
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
        assert "inf" not in run.stdout and "nan" not in run.stdout


def test_every_gpu_profile_states_its_node():
    for profile in list_profiles():
        if profile.kind == "gpu":
            assert profile.interconnect is not None and profile.interconnect.node_gpus is not None, profile.name
            assert profile.interconnect.step_latency_s is not None, profile.name


@pytest.mark.parametrize("name", NEW)
def test_new_profiles_predict_finite_positive_numbers(name):
    hw = load_profile(name)
    assert hw.memory.capacity_bytes.value > 0 and hw.compute.sm_count is not None
    for method in METHODS:
        pred = predict(hw, method, seq=np.array([4096.0, 131072.0]), batch=1)
        for quantity in (pred.latency_s, pred.flops, pred.hbm_bytes, pred.memory_bytes):
            values = np.asarray(quantity, dtype=float)
            assert np.all(np.isfinite(values)) and np.all(values > 0), (name, method)
    two = predict(hw, seq=4096, batch=4, gpus=2)
    assert np.isfinite(float(two.latency_s)) and float(two.latency_s) > 0


def test_mi300x_is_prediction_only():
    hw = load_profile("mi300x")
    assert hw.vendor == "AMD" and "prediction only" in hw.description


def test_gh200_host_link_is_c2c():
    """NVLink-C2C (450 GB/s each way) instead of PCIe Gen5 (64): offloaded KV arrives 7x faster."""
    gh200 = load_profile("gh200")
    pcie = gh200.model_copy(update={"host_link": load_profile("h100-sxm").host_link})
    c2c = predict(gh200, "dense", seq=65536, batch=8, offload=0.5)
    slow = predict(pcie, "dense", seq=65536, batch=8, offload=0.5)
    assert float(c2c.latency_s) < float(slow.latency_s)
    moved = [t for t in c2c.timing.ops if np.any(np.asarray(t.op.h2d) > 0)]
    assert moved
    for timed in moved:
        assert float(timed.floors["link"]) == pytest.approx(float(timed.op.h2d) / (450e9 * 0.8))
