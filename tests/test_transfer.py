"""One profile per device: trust per field, laws inherited across devices and scaled by the
receiving device's datasheet facts, capacities as the GPU reports them, intervals by trust."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kvsim.errors import KvsimError
from kvsim.hardware import trust_of
from kvsim.profiles import list_profiles, load_profile, profile_for_device
from kvsim.intervals import covered, fit_quantiles, interval, quantiles, scaled_interval
from kvsim.predict import predict

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def test_trust_comes_from_the_source():
    assert trust_of("measured 2026-11-26, file.jsonl") == "measured"
    assert trust_of("fitted: old calibrations") == "measured"
    assert trust_of("transferred from h100-sxm (as measured): ...") == "transferred"
    assert trust_of("assumed (not measured)") == "assumed"
    assert trust_of("https://www.nvidia.com/ (80 GB)") == "datasheet"


def test_a_same_architecture_device_inherits_the_h100_laws_scaled_by_its_facts():
    h100, pcie = load_profile("h100"), load_profile("h100-pcie")
    assert pcie.trust_class == "same-architecture" and h100.trust_class == "measured"
    assert load_profile("h200").trust_class == "measured"  # the H200 was measured itself
    assert pcie.memory.gather_efficiency.value == h100.memory.gather_efficiency.value
    assert pcie.memory.gather_efficiency.source.startswith("transferred from h100-sxm")
    assert pcie.launch_overhead_s.value == h100.launch_overhead_s.value
    assert pcie.topk.single_block.concurrent_rows.value == 114
    # the seconds a kernel loses beyond streaming at the best fraction carry over
    sizes = np.array([s for s, _ in h100.memory.efficiency.points])
    e100, e_pcie = h100.memory.efficiency.at(sizes), pcie.memory.efficiency.at(sizes)
    best = e100.max()
    lost = lambda e, bw: sizes / bw * (1 / e - 1 / best)  # noqa: E731
    assert lost(e_pcie, pcie.memory.bandwidth_Bps.value) == pytest.approx(lost(e100, h100.memory.bandwidth_Bps.value))
    assert np.all(e_pcie >= e100 - 1e-12) and e_pcie.max() == pytest.approx(best)  # slower memory: a smaller share lost
    rate = lambda p: p.compute.sm_count.value * p.compute.clock_hz.value  # noqa: E731
    assert pcie.memory.reread_Bps.value == pytest.approx(h100.memory.reread_Bps.value * rate(pcie) / rate(h100))


def test_other_architectures_get_the_laws_through_their_own_facts():
    h100, a100 = load_profile("h100"), load_profile("a100-80gb-sxm")
    assert a100.trust_class == "other-architecture" and a100.architecture == "ampere"
    assert a100.topk.single_block.concurrent_rows.value == a100.compute.sm_count.value == 108
    rate = lambda p: p.compute.sm_count.value * p.compute.clock_hz.value  # noqa: E731
    assert a100.memory.reread_Bps.value == pytest.approx(h100.memory.reread_Bps.value * rate(a100) / rate(h100))
    assert a100.topk.single_block.row_s.value == pytest.approx(
        h100.topk.single_block.row_s.value * h100.compute.clock_hz.value / a100.compute.clock_hz.value)
    small, best = h100.compute.efficiency.points[0][1], max(e for _, e in h100.compute.efficiency.points)
    want = 1 / (1 / best + 312e12 / 989.4e12 * (1 / small - 1 / best))  # a slower peak loses a smaller share
    assert a100.compute.efficiency.points[0][1] == pytest.approx(want) and want > small


def test_inheriting_profiles_have_the_facts_the_laws_need_and_reported_capacity():
    heirs = [p for p in list_profiles() if p.inherits]
    assert {"h200-sxm", "h100-pcie", "a100-80gb-sxm", "a100-40gb-sxm", "v100-32gb-sxm", "rtx-3090", "rtx-4090",
            "l40s"} <= {p.name for p in heirs}
    for p in heirs + [load_profile("h100")]:
        assert p.compute.sm_count.trust == "datasheet" and p.compute.clock_hz.value > 1e9
        assert p.memory.capacity_bytes.value % MIB == 0 and "nvidia-smi" in p.memory.capacity_bytes.source
        assert p.device_names and p.memory.efficiency.trust in ("measured", "transferred")
    assert load_profile("h100").memory.capacity_bytes.value == 81559 * MIB
    assert load_profile("a100-80gb-sxm").memory.capacity_bytes.value == 81920 * MIB
    assert load_profile("rtx-3090").memory.capacity_bytes.value == 24576 * MIB


def test_gpu_names_find_their_profile():
    assert profile_for_device("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert profile_for_device("NVIDIA H100 PCIe") == "h100-pcie"
    assert profile_for_device("NVIDIA H200") == "h200-sxm"
    assert profile_for_device("NVIDIA A100-SXM4-40GB") == "a100-40gb-sxm"
    assert profile_for_device("NVIDIA A100-SXM4-80GB") == "a100-80gb-sxm"
    assert profile_for_device("Some Other GPU") is None


def test_workspace_is_context_plus_allocator_reserve():
    h100 = load_profile("h100")
    assert h100.workspace_bytes.value == h100.memory.context_bytes.value + h100.memory.allocator_reserve_bytes.value


def _profile_file(tmp_path, **change):
    data = yaml.safe_load((ROOT / "hw_profiles" / "h100-pcie.yaml").read_text())
    data.update(change)
    path = tmp_path / f"{data['name']}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_profile_of_its_own_keeps_its_fields_and_bad_inheritance_is_one_line(tmp_path):
    mine = _profile_file(tmp_path, name="mine", aliases=[], launch_overhead_s={"value": 9e-6, "source": "assumed: x"})
    profile = load_profile(str(mine))
    assert profile.launch_overhead_s.value == 9e-6 and profile.memory.gather_efficiency.trust == "transferred"
    with pytest.raises(KvsimError, match="unknown hardware 'nowhere'"):
        load_profile(str(_profile_file(tmp_path, name="mine2", inherits="nowhere")))
    out = subprocess.run([sys.executable, "-m", "kvsim", "hw", "show", str(_profile_file(tmp_path, inherits="mine"))],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_leaving_a_device_out_removes_every_law_it_measured():
    from kvsim.profiles import left_out
    from kvsim.transfer import LAWS
    moved = left_out("h100-sxm", "h200-sxm")
    assert moved.name == "h100-sxm from h200-sxm" and moved.trust_class == "same-architecture"
    h200 = load_profile("h200")
    assert moved.memory.reread_Bps.value == pytest.approx(h200.memory.reread_Bps.value)  # same SMs and clock
    assert moved.topk.call_s.value == h200.topk.call_s.value and moved.memory.context_bytes.value == h200.memory.context_bytes.value
    data = moved.model_dump()
    for path in LAWS:
        value = data
        for key in path.split("."):
            value = (value or {}).get(key)
        if value is not None and path != "topk.single_block.concurrent_rows":
            assert trust_of(value["source"]) in ("transferred", "assumed"), path


def test_hw_show_prints_each_fields_trust():
    out = subprocess.run([sys.executable, "-m", "kvsim", "hw", "show", "h100-pcie"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    line = next(row for row in out.stdout.splitlines() if row.startswith("memory.gather_efficiency"))
    assert " transferred " in line
    assert any(row.startswith("memory.bandwidth_Bps") and " datasheet " in row for row in out.stdout.splitlines())


def test_intervals_are_vectorized_and_hold_the_stated_share():
    rng = np.random.default_rng(0)
    residuals = rng.normal(0.02, 0.03, 4000)
    q = fit_quantiles(residuals)
    assert q["q_low"] < 0.02 < q["q_high"]
    predicted = np.full(4000, 1e-3)
    measured = predicted * np.exp(rng.normal(0.02, 0.03, 4000))
    low, high = predicted * np.exp(q["q_low"]), predicted * np.exp(q["q_high"])
    assert 0.87 < covered(measured, low, high).mean() < 0.93
    latency = np.array([[1e-3, 2e-3], [3e-3, 4e-3]])
    low, high = interval(latency, "measured")
    assert low.shape == high.shape == (2, 2) and np.all(low <= latency * 1.0001) and np.all(high >= latency)
    cost_low, cost_high = scaled_interval(np.array([2.0, 4.0]), "measured")
    assert np.all(cost_low < cost_high)
    from kvsim.intervals import max_batch_interval
    lat = np.array([[1e-3, 2e-3, 4e-3, 8e-3]])
    slow, fast = max_batch_interval([1, 2, 4, 8], lat, 4.05e-3, "measured")
    assert slow[0] <= fast[0] <= 4 and fast[0] >= 2
    assert quantiles("other-architecture")[2] in ("measured", "same-architecture", "other-architecture")


def test_predictions_carry_their_interval():
    pred = predict("h100", method="dense", seq=np.array([4096, 131072]), batch=1)
    low, high = pred.latency_interval
    assert np.all(low <= pred.latency_s) and np.all(high > pred.latency_s)
    out = subprocess.run([sys.executable, "-m", "kvsim", "predict", "--hw", "h100", "--seq", "32k", "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT)
    import json
    record = json.loads(out.stdout)
    assert record["latency_low_s"] <= record["latency_s"] < record["latency_high_s"]
    text = subprocess.run([sys.executable, "-m", "kvsim", "predict", "--hw", "h100", "--seq", "32k"],
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert "–" in next(line for line in text.splitlines() if "latency per step" in line)


def test_calibration_writes_its_fields_in_place():
    from kvsim.calibrate import patch_profile_text
    text = (ROOT / "hw_profiles" / "h200-sxm.yaml").read_text()
    fields = {"launch_overhead_s": {"value": 3e-6, "source": "measured x"},
              "memory.efficiency": {"points": [[1e5, 0.1], [1e9, 0.9]], "source": "measured y"},
              "calibration": {"measurements": ["f.jsonl"], "date": "2026-11-26", "method": "m"}}
    patched = patch_profile_text(text, fields)
    old, new = yaml.safe_load(text), yaml.safe_load(patched)
    assert new["launch_overhead_s"] == fields["launch_overhead_s"] and new["calibration"]["measurements"] == ["f.jsonl"]
    assert new["memory"]["efficiency"]["points"] == [[1e5, 0.1], [1e9, 0.9]]
    assert {k: v for k, v in new["memory"].items() if k != "efficiency"} == {k: v for k, v in old["memory"].items() if k != "efficiency"}
    assert [line for line in patched.splitlines() if line.startswith("#")] == [line for line in text.splitlines() if line.startswith("#")]


def test_max_batch_records_are_checked_against_kvsim():
    import json
    from kvsim.memory_checks import max_batch_checks
    records = [json.loads(line) for name in ("h100-memory.jsonl", "h200-memory.jsonl")
               for line in (ROOT / "benchmarks" / "results" / name).read_text().splitlines()]
    checks = max_batch_checks(records)
    assert len(checks) == 10 and {c["hw"] for c in checks} == {"h100-sxm", "h200-sxm"}
    for c in checks:  # the allocation within 1%: the largest batch the runtime's or one off
        assert abs(c["predicted"] - c["ran"]) <= 1 and abs(c["allocation_err"]) < 0.01


def test_a_rotating_kernel_carries_its_sm_seconds_and_its_loads_follow_the_device():
    """rope_attention on another device: the plain kernel's time on that device's attention
    curve plus the seconds rotating took beyond plain on the H100, over the SM-rate ratio."""
    from kvsim.hardware import kernel_seconds
    from kvsim.transfer import beyond_plain_points
    h100, h200, a100 = load_profile("h100"), load_profile("h200"), load_profile("a100-80gb-sxm")
    rope = h100.memory.kernel_efficiency["rope_attention"].points
    curve = lambda p, name="attention": p.memory.kernel_efficiency[name].points  # noqa: E731
    bw = lambda p: p.memory.bandwidth_Bps.value  # noqa: E731
    same = beyond_plain_points(rope, curve(h100), curve(h100), (bw(h100), bw(h100)), 1.0)
    assert np.allclose([e for _, e in same], [e for _, e in rope])  # onto itself: unchanged
    sizes = np.array([x for x, _ in rope])
    seconds = lambda p: sizes / (bw(p) * np.array([e for _, e in curve(p, "rope_attention")]))  # noqa: E731
    extra = seconds(h100) - kernel_seconds(curve(h100), bw(h100), sizes)
    assert np.all(extra >= 0)
    for other in (h200, a100):
        assert curve(other, "rope_attention") and "transferred from h100-sxm" in \
            other.memory.kernel_efficiency["rope_attention"].source
        rate = (other.compute.sm_count.value * other.compute.clock_hz.value
                / (h100.compute.sm_count.value * h100.compute.clock_hz.value))
        want = kernel_seconds(curve(other), bw(other), sizes) + extra / rate
        assert seconds(other) == pytest.approx(np.maximum(want, sizes / bw(other)), rel=1e-9)
    # the H200's faster memory shortens the loads, never the rotation
    assert np.all(seconds(h200) >= extra - 1e-12) and np.all(seconds(h200) <= seconds(h100) + 1e-12)
