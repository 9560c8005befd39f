"""Dense cost by hand, roofline laws, profiles and presets."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kvsim.errors import KvsimError
from kvsim.hardware import Curve
from kvsim.profiles import list_profiles, load_profile
from kvsim.models import PRESETS, load_model
from kvsim.predict import predict
from kvsim.roofline import graph_replay_time, op_time
from kvsim.units import parse_bytes, parse_tokens, parse_token_range

L, HKV, D_HEAD, S = 32, 8, 128, 131072  # llama-3.1-8b at 128k


def _op(pred, name):
    return next(op for op in pred.cost.ops if op.name == name)


def test_dense_kv_read_by_hand():
    pred = predict("h100", seq=S, batch=1)
    kv_read = 2 * 32 * 8 * 128 * 131072 * 2  # K and V, layers, KV heads, d, S, bf16
    q_read = L * 32 * D_HEAD * 2
    assert _op(pred, "layers/attn/decode").hbm_read == kv_read + q_read
    # 4·G·S·d (+5 per score for softmax) FLOPs per KV head, over 32 query heads and layers
    assert _op(pred, "layers/attn/decode").flops == L * 32 * S * (4 * D_HEAD + 5)


def test_dense_weights_read_once_and_flops_two_per_weight():
    model = PRESETS["llama-3.1-8b"]
    for batch in (1, 7):
        pred = predict("h100", seq=4096, batch=batch)
        linear = [op for op in pred.cost.ops if op.kind == "linear"]
        weights = model.n_layers * model.layer_params + model.vocab * model.d_model
        activations = sum(float(op.hbm_read) for op in linear) - weights * 2
        assert activations == pytest.approx(batch * 2 * (
            model.n_layers * (model.d_model * 2 + model.q_dim + model.ffn_dim) + model.d_model))
        assert sum(float(op.flops) for op in linear) == 2 * batch * weights


def test_kv_cache_bytes_and_memory():
    pred = predict("h100", seq=S, batch=2)
    assert pred.kv_bytes == 2 * 2 * L * HKV * D_HEAD * S * 2
    assert pred.memory_bytes > pred.kv_bytes + 15e9  # plus 16 GB of bf16 weights
    assert bool(pred.fits)
    assert not bool(predict("h100", seq=1 << 20, batch=8).fits)


def test_int8_kv_halves_the_cache_plus_scales():
    bf16 = predict("h100", seq=S, kv_dtype="bf16")
    int8 = predict("h100", seq=S, kv_dtype="int8")
    rows = L * HKV * S * 2  # K and V rows
    assert int8.kv_bytes == pytest.approx(bf16.kv_bytes / 2 + rows * 4)


def test_totals_are_sums_of_ops():
    pred = predict("a100", seq=np.array([1024, 65536]), batch=np.array([[1], [16]]))
    assert np.allclose(pred.hbm_bytes, sum(np.asarray(op.hbm_bytes) for op in pred.cost.ops))
    assert np.allclose(pred.flops, sum(np.asarray(op.flops) for op in pred.cost.ops))
    assert np.allclose(pred.latency_s, sum(t.time_s for t in pred.timing.ops) + graph_replay_time(pred.hw))
    assert pred.latency_s.shape == (2, 2)


def test_generation_sums_decode_steps():
    pred = predict("h100", seq=8192, batch=4, gen=16)
    steps = predict("h100", seq=8192 + np.arange(1, 17), batch=4)
    assert pred.generation.decode_s == pytest.approx(float(steps.latency_s.sum()))
    assert pred.generation.total_s == pytest.approx(pred.generation.ttft_s + pred.generation.decode_s)
    assert pred.generation.tokens_per_s == pytest.approx(4 * 16 / pred.generation.total_s)


def test_long_generation_is_integrated_closely():
    exact = predict("h100", seq=4096, gen=4096).generation.decode_s
    sampled = predict("h100", seq=4095, gen=4097).generation.decode_s
    assert sampled == pytest.approx(exact, rel=2e-3)


contexts = st.integers(min_value=1, max_value=1 << 21)
batches = st.integers(min_value=1, max_value=256)
hw_names = st.sampled_from(["h100", "a100-40gb", "rtx3090", "v100-32gb", "cpu", "l40s"])
model_names = st.sampled_from(sorted(PRESETS))


@settings(max_examples=40, deadline=None)
@given(hw_names, model_names, contexts, contexts, batches, batches)
def test_bytes_and_time_never_fall_as_context_or_batch_grows(hw, model, s1, s2, b1, b2):
    seq = np.array([min(s1, s2), max(s1, s2)])
    batch = np.array([[min(b1, b2)], [max(b1, b2)]])
    pred = predict(hw, model=model, seq=seq, batch=batch)
    for value in (pred.hbm_bytes, pred.latency_s, pred.flops, pred.memory_bytes):
        assert np.all(np.diff(value, axis=1) >= -1e-9 * value[:, :1])
        assert np.all(np.diff(value, axis=0) >= -1e-9 * value[:1, :])


@settings(max_examples=40, deadline=None)
@given(hw_names, contexts, batches)
def test_time_is_at_least_every_floor(hw, seq, batch):
    profile = load_profile(hw)
    pred = predict(profile, seq=seq, batch=batch)
    for timed in pred.timing.ops:
        op = timed.op
        floor_compute = float(op.flops) / profile.compute.peak(op.dtype)
        floor_memory = float(op.hbm_bytes) / profile.memory.bandwidth_Bps.value
        floor_launch = float(op.launches) * profile.launch_overhead_s.value
        assert float(timed.time_s) >= max(floor_compute, floor_memory, floor_launch) * (1 - 1e-12)
    assert float(pred.latency_s) >= sum(float(op.launches) for op in pred.cost.ops) * profile.launch_overhead_s.value


def test_op_bound_is_reported():
    pred = predict("h100", seq=S, batch=1)
    bounds = {t.op.name: str(t.bound_names()) for t in pred.timing.ops}
    assert bounds["layers/attn/decode"] == "memory"
    assert bounds["embed"] == "latency"
    prefill = predict("h100", seq=S, gen=1).generation.prefill
    assert {str(t.bound_names()) for t in prefill.ops if t.op.name.startswith("layers/mlp/") and t.op.kind == "linear"} == {"compute"}


def test_tensor_parallel_splits_weights_and_kv():
    one = predict("h100", model="llama-3.1-70b", seq=32768, batch=4)
    four = predict("h100", model="llama-3.1-70b", seq=32768, batch=4, gpus=4)
    w1 = next(r.gpu for r in one.cost.resident if r.name == "weights")
    w4 = next(r.gpu for r in four.cost.resident if r.name == "weights")
    assert w4 == pytest.approx(w1 / 4, rel=0.01)  # norms are replicated
    assert four.kv_bytes == pytest.approx(one.kv_bytes / 4)
    allreduce = next(op for op in four.cost.ops if op.name == "layers/allreduce")
    assert allreduce.comm_bytes == pytest.approx(2 * 80 * 2 * 3 / 4 * 4 * 8192 * 2)


def test_every_profile_loads_with_sources():
    profiles = list_profiles()
    names = {p.name for p in profiles}
    for required in ["a100-40gb-sxm", "a100-80gb-sxm", "h100-sxm", "h100-pcie", "h200-sxm",
                     "v100-32gb-sxm", "rtx-3090", "rtx-4090", "l40s"]:
        assert required in names
    assert sum(p.kind == "cpu" for p in profiles) >= 2
    for alias, name in [("a100", "a100-80gb-sxm"), ("h100", "h100-sxm"), ("h200", "h200-sxm"),
                        ("v100-32gb", "v100-32gb-sxm"), ("rtx3090", "rtx-3090"),
                        ("rtx4090", "rtx-4090"), ("cpu", "epyc-7763")]:
        assert load_profile(alias).name == name
    for p in profiles:
        for dtype, peak in p.compute.peak_flops.items():
            assert peak.value > 0 and len(peak.source) > 10, (p.name, dtype)
        assert p.memory.efficiency.trust in ("assumed", "measured", "transferred"), p.name


def test_every_preset_loads():
    assert {"llama-2-7b", "llama-2-7b-32k", "llama-2-13b", "llama-3-8b", "llama-3.1-8b",
            "llama-3.1-70b", "mistral-7b-v0.2", "opt-6.7b", "opt-13b", "opt-30b"} <= set(PRESETS)
    assert 8.0e9 < PRESETS["llama-3.1-8b"].n_params < 8.1e9
    assert 70e9 < PRESETS["llama-3.1-70b"].n_params < 71e9
    assert 6.6e9 < PRESETS["llama-2-7b"].n_params < 6.8e9


def test_broken_profiles_name_the_file_and_field(tmp_path):
    good = load_profile("h100").model_dump()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(KvsimError, match="bad.yaml: not valid YAML"):
        load_profile(str(bad_yaml))
    import yaml
    del good["memory"]["bandwidth_Bps"]
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump(good))
    with pytest.raises(KvsimError, match="missing.yaml: field 'memory.bandwidth_Bps'"):
        load_profile(str(missing))
    with pytest.raises(KvsimError, match="unknown hardware 'h900'"):
        load_profile("h900")


def test_user_profile_folder(tmp_path, monkeypatch):
    import yaml
    mine = load_profile("h100").model_dump()
    mine.update(name="my-gpu", aliases=["mine"])
    (tmp_path / "my-gpu.yaml").write_text(yaml.safe_dump(mine))
    monkeypatch.setenv("KVSIM_HW_PATH", str(tmp_path))
    assert load_profile("mine").name == "my-gpu"


def test_curve_rejects_bad_points():
    with pytest.raises(ValueError):
        Curve(points=[(10.0, 0.5), (1.0, 0.6)], source="assumed: test")
    with pytest.raises(ValueError):
        Curve(points=[(1.0, 1.5)], source="assumed: test")


def test_units():
    assert parse_tokens("128k") == 131072 and parse_tokens("1M") == 1048576
    assert parse_tokens("4096") == 4096 and parse_tokens(7) == 7
    assert parse_bytes("80GB") == 80e9 and parse_bytes("24GiB") == 24 * 2**30
    assert parse_token_range("4k..32k") == [4096, 8192, 16384, 32768]
    for bad in ("-1", "1.5", "12q", "", "0"):
        with pytest.raises(ValueError):
            parse_tokens(bad)


def test_bad_model_and_workload():
    with pytest.raises(KvsimError, match="unknown model"):
        load_model("gpt-5")
    with pytest.raises(KvsimError, match="batch must be positive"):
        predict("h100", seq=4096, batch=0)
    with pytest.raises(KvsimError, match="unknown method"):
        predict("h100", method="magic", seq=4096)
