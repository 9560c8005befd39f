"""The graph engine's replay cost and the kernel-family memory curves (issue 13, attention-only
latency): hand formulas, the fits against the committed measurements, and the laws."""
import json
from pathlib import Path

import numpy as np

from kvsim.cost import Cost, Op
from kvsim.fits import attention_curve_fit, kernel_curve_fit, split_kernel_seconds
from kvsim.hardware import HardwareProfile
from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS
from kvsim.models import load_model
from kvsim.predict import predict
from kvsim.profiles import load_profile
from kvsim.roofline import graph_replay_time, op_time, step_time

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def with_memory(hw, **fields):
    data = hw.model_dump()
    for key, value in fields.items():
        if key in ("graph_launch_s",):
            data[key] = value
        else:
            data["memory"][key] = value
    return HardwareProfile.model_validate(data)


def curve(points):
    return {"points": points, "source": "measured (test)"}


def test_a_replay_pays_its_fixed_cost_once_beside_its_kernels():
    hw = with_memory(load_profile("h100"), graph_launch_s={"value": 10e-6, "source": "measured (test)"})
    ops = (Op("a", "attention", hbm_read=1e9), Op("b", "attention", hbm_read=2e6, launches=3.0))
    kernels = sum(float(op_time(op, hw).time_s) for op in ops)
    assert float(step_time(Cost(ops), hw).latency_s) == kernels + 10e-6
    assert graph_replay_time(hw) == 10e-6
    none = with_memory(hw, graph_launch_s=None)
    assert graph_replay_time(none) == 0.0 and float(step_time(Cost(ops), none).latency_s) == kernels


def test_attention_alone_is_one_replay_of_its_own():
    hw = with_memory(load_profile("h100"), graph_launch_s={"value": 13e-6, "source": "measured (test)"})
    pred = predict(hw, method="h2o", seq=16384, batch=4, model="llama-3.1-8b")
    ops = sum(float(t.time_s) for t in pred.timing.ops if t.op.kind == "attention")
    assert float(pred.attention()["latency_s"]) == ops + hw.graph_launch_s.value


def test_an_attention_op_reads_its_family_curve_and_others_the_fitted_one():
    hw = with_memory(load_profile("h100"), kernel_efficiency={"attention": curve([[1e6, 0.2], [1e8, 0.8]])})
    peak = hw.memory.bandwidth_Bps.value
    attn = Op("x", "attention", hbm_read=1e8, launches=1.0, curve="attention")
    other = Op("x", "attention", hbm_read=1e8, launches=1.0)
    assert np.isclose(op_time(attn, hw).floors["memory"], 1e8 / (peak * 0.8))
    assert np.isclose(op_time(other, hw).floors["memory"], 1e8 / (peak * hw.memory.efficiency.at(1e8)))
    # the rotating variant without a curve of its own is timed as the kernel it varies
    rope = Op("x", "attention", hbm_read=1e8, launches=1.0, curve="rope_attention")
    assert np.isclose(op_time(rope, hw).floors["memory"], 1e8 / (peak * 0.8))
    hw2 = with_memory(hw, kernel_efficiency={"attention": curve([[1e6, 0.2], [1e8, 0.8]]),
                                             "rope_attention": curve([[1e6, 0.1], [1e8, 0.5]])})
    assert np.isclose(op_time(rope, hw2).floors["memory"], 1e8 / (peak * 0.5))


def test_below_the_smallest_measured_size_time_follows_the_measured_line():
    hw = with_memory(load_profile("h100"), kernel_efficiency={"attention": curve([[1e7, 0.25], [1e8, 0.8]])})
    peak = hw.memory.bandwidth_Bps.value
    t0, t1 = 1e7 / (peak * 0.25), 1e8 / (peak * 0.8)
    slope = (t1 - t0) / 9e7
    for x in (1e5, 1e6, 5e6):
        op = Op("x", "attention", hbm_read=x, launches=1.0, curve="attention")
        assert np.isclose(op_time(op, hw).floors["memory"], t0 + slope * (x - 1e7))


def test_kernel_time_never_falls_with_bytes_on_every_shipped_family_curve():
    sizes = np.logspace(3, 11, 400)
    for name in ("h100", "h200", "a100-80gb-sxm"):
        hw = load_profile(name)
        for family in (*hw.memory.kernel_efficiency, "attention", "rope_attention"):
            t = op_time(Op("x", "attention", hbm_read=sizes, launches=1.0, curve=family), hw).floors["memory"]
            assert np.all(np.diff(t) >= -1e-15), (name, family)


def test_kernel_curve_fit_by_hand():
    points = kernel_curve_fit([1e6, 1.02e6, 1e8, 1e9, 4e9], [10e-6, 12e-6, 200e-6, 2.5e-3, 3e-3], 1e12)
    # the two sizes within 5% are one point (medians); 1e9 runs slower per byte than 1e8: held;
    # 4e9 in 3 ms would be above the peak: clipped at 1
    assert np.allclose(points, [[1.01e6, np.median([0.1, 1.02e6 / 12e-6 / 1e12])], [1e8, 0.5], [1e9, 0.5],
                                [4e9, 1.0]])
    assert [e for _, e in kernel_curve_fit([1e6, 1e7], [2e-6, 40e-6], 1e12)] == [0.5, 0.5]  # never falls


def test_a_variant_curve_is_the_plain_curve_plus_the_measured_extra_at_its_own_bytes():
    from kvsim.fits import logits_curve_fit
    hw = with_memory(load_profile("h100"), kernel_efficiency={"attention": curve([[1e7, 0.25], [1e9, 0.8]])})
    peak = hw.memory.bandwidth_Bps.value
    # two paired timings (absolute times differ from the curve: only their difference counts);
    # the second variant ran faster than plain, which adds nothing
    rows = [{"kind": "logits_load", "batch": 8, "query_heads": 32, "rows": 3000, "bytes": 1e7,
             "plain_s": 50e-6, "logits_s": 56e-6},
            {"kind": "logits_load", "batch": 8, "query_heads": 32, "rows": 300000, "bytes": 1e9,
             "plain_s": 4e-3, "logits_s": 3.9e-3}]
    logits = np.array([8 * 32 * 3000 * 4.0, 8 * 32 * 300000 * 4.0])  # fp32 per query head and row
    points = np.array(logits_curve_fit(rows, hw))
    sizes = np.array([1e7, 1e9]) + logits
    seconds = np.array([1e7 / (peak * 0.25) + 6e-6, 1e9 / (peak * 0.8)])
    expected = np.minimum(sizes / seconds / peak, 1.0)  # the larger one, with its logits, is at the peak
    assert np.allclose(points[:, 0], sizes) and np.allclose(points[:, 1], expected)


def test_split_calls_lose_their_combine_kernel():
    # batch 1 x 8 KV heads splits (128 programs wanted); batch 32 x 8 heads does not
    assert np.allclose(split_kernel_seconds([10e-6, 10e-6], [1, 32], 8, [4096, 4096], 1e-6, DENSE_TARGET_PROGRAMS),
                       [9e-6, 10e-6])


def test_the_committed_kernel_benchmarks_give_a_curve_that_never_falls():
    # the shipped profiles carry no family curve until bench_floor.py / gpu_attn.sh have measured
    # the small sizes and the rotating kernel (issue 13); the fit of what is committed is checked
    for tag in ("h100", "h200"):
        hw = load_profile(tag)
        records = [json.loads(line) for line in open(RESULTS / f"{tag}-kernels.jsonl")]
        launch = [json.loads(line) for line in open(RESULTS / f"{tag}-launch.jsonl")]
        combine = next(r["gpu_s"] for r in launch if r.get("op") == "triton kernel, 22 args")
        fitted = np.asarray(attention_curve_fit(records, hw.memory.bandwidth_Bps.value, combine,
                                                DENSE_TARGET_PROGRAMS))
        assert len(fitted) >= 4 and np.all(np.diff(fitted[:, 0]) > 0), tag
        assert np.all(np.diff(fitted[:, 1]) >= 0) and 0.3 < fitted[0, 1] < fitted[-1, 1] <= 1.0, tag


def test_streamingllm_attention_is_the_rotating_kernel_and_the_others_the_plain_one():
    hw, model = load_profile("h100"), load_model("llama-3.1-8b")
    rope = predict(hw, method="streamingllm", seq=8192, batch=2, model=model)
    assert [t.op.curve for t in rope.timing.ops if t.op.name == "layers/attn/decode"] == ["rope_attention"]
    other = Op("x", "attention", hbm_read=1e8, curve="unmeasured_family")  # no curve of its own: the fitted one
    assert op_time(other, hw).floors["memory"] == op_time(Op("x", "attention", hbm_read=1e8), hw).floors["memory"]
    for method in ("dense", "quest", "sparq", "tidaldecode", "duoattention", "adore"):
        pred = predict(hw, method=method, seq=8192, batch=2, model=model)
        mains = [t.op for t in pred.timing.ops if t.op.kind == "attention" and t.op.curve == "attention"]
        assert mains and all(not op.name.endswith("_combine") for op in mains), method
    for method in ("h2o", "alisa"):  # the kernel writing its logits: that variant's own curve
        pred = predict(hw, method=method, seq=8192, batch=2, model=model)
        assert [t.op.curve for t in pred.timing.ops if t.op.name == "layers/attn/decode"] == ["attention_logits"]
    tidal = predict(hw, method="tidaldecode", seq=8192, batch=2, model=model)  # its selection layers write them
    assert [t.op.curve for t in tidal.timing.ops if t.op.name == "layers/attn/select_decode"] == ["attention_logits"]


def test_a_profile_without_the_logits_curve_times_that_kernel_as_plain_decode():
    hw = with_memory(load_profile("h100"), kernel_efficiency={"attention": curve([[1e6, 0.2], [1e8, 0.8]])})
    logits, plain = (Op("x", "attention", hbm_read=3e7, launches=1.0, curve=c) for c in ("attention_logits", "attention"))
    assert op_time(logits, hw).floors["memory"] == op_time(plain, hw).floors["memory"]


def test_devices_of_a_chip_inherit_the_floors_and_curves():
    from kvsim.transfer import transfer, without_laws
    parent = load_profile("h100").model_dump(exclude_none=True)
    parent["graph_launch_s"] = {"value": 13e-6, "source": "measured (test)"}
    parent["memory"]["kernel_efficiency"] = {"attention": curve([[1e7, 0.4], [1e9, 0.9]])}
    child = without_laws(parent)
    child["name"], child["memory"]["bandwidth_Bps"]["value"] = "child", 2 * parent["memory"]["bandwidth_Bps"]["value"]
    child = transfer(child, parent)
    assert child["graph_launch_s"]["value"] == 13e-6 and child["graph_launch_s"]["source"].startswith("transferred")
    # twice the bandwidth: the seconds lost beyond the peak carry over (kvsim.transfer.lost_time_points)
    assert np.allclose(child["memory"]["kernel_efficiency"]["attention"]["points"],
                       [[1e7, 1 / (1 / 0.9 + 2 * (1 / 0.4 - 1 / 0.9))], [1e9, 0.9]])
