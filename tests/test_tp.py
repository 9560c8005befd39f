"""Tensor parallelism: what one of N GPUs holds and sends, by hand, and how it reaches plan/sweep."""
import numpy as np
import pytest

from kvsim.errors import KvsimError
from kvsim.profiles import load_profile
from kvsim.models import PRESETS
from kvsim.plan import evaluate, max_batch
from kvsim.predict import predict
from kvsim.sweep import sweep

M70 = PRESETS["llama-3.1-70b"]


def _resident(pred, name):
    return float(next(r.gpu for r in pred.cost.resident if r.name == name))


def _op(pred, name):
    return next(op for op in pred.cost.ops if op.name == name)


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_per_gpu_weights_are_one_nth(gpus):
    one = predict("h100", model="llama-3.1-70b", seq=8192, gpus=1)
    many = predict("h100", model="llama-3.1-70b", seq=8192, gpus=gpus)
    norms = (2 * M70.n_layers + 1) * M70.d_model * 2  # bf16 RMSNorm weights, replicated
    assert _resident(many, "weights") == pytest.approx((_resident(one, "weights") - norms) / gpus + norms, rel=1e-12)
    # the weights each GPU streams per step: every linear op's weights (FLOPs = 2·rows·weights) are 1/N
    for name in ("layers/attn/qkv_proj", "layers/attn/o_proj", "layers/mlp/gate_up", "layers/mlp/down", "lm_head"):
        assert float(_op(many, name).flops) == pytest.approx(float(_op(one, name).flops) / gpus)


@pytest.mark.parametrize("gpus,batch", [(2, 1), (4, 3), (8, 16)])
def test_allreduce_bytes_are_a_ring(gpus, batch):
    pred = predict("h100", model="llama-3.1-70b", seq=4096, batch=batch, gpus=gpus)
    activation = batch * M70.d_model * 2  # one bf16 hidden state per sequence
    per_allreduce = 2 * (gpus - 1) / gpus * activation
    allreduce = _op(pred, "layers/allreduce")
    assert float(allreduce.comm_bytes) == pytest.approx(2 * M70.n_layers * per_allreduce)  # after attention and MLP
    assert float(allreduce.launches) == 2 * M70.n_layers
    gather = _op(pred, "lm_head_allgather")
    assert float(gather.comm_bytes) == pytest.approx((gpus - 1) / gpus * batch * M70.vocab * 4)


def test_one_gpu_has_no_collectives():
    pred = predict("h100", model="llama-3.1-70b", seq=4096, gpus=1)
    assert not [op for op in pred.cost.ops if op.kind == "comm"]


def test_kv_cache_splits_by_kv_head_and_replicates_below_one():
    one = predict("h100", model="llama-3.1-70b", seq=32768, batch=2)
    eight = predict("h100", model="llama-3.1-70b", seq=32768, batch=2, gpus=8)
    assert float(eight.kv_bytes) == pytest.approx(float(one.kv_bytes) / 8)  # 8 KV heads, one each
    mha = predict("h100", model="llama-2-7b", seq=4096, gpus=4)
    assert float(mha.kv_bytes) == pytest.approx(float(predict("h100", model="llama-2-7b", seq=4096).kv_bytes) / 4)


def test_interconnect_time_is_bytes_over_link_plus_latency():
    for hw in ("h100", "rtx4090"):
        profile = load_profile(hw)
        pred = predict(profile, model="llama-3.1-8b", seq=4096, batch=8, gpus=2)
        timed = next(t for t in pred.timing.ops if t.op.name == "layers/allreduce")
        link = profile.interconnect
        steps = 2 * (2 - 1)  # a ring all-reduce over 2 GPUs: 2·(N−1) steps per call
        floor = float(timed.op.comm_bytes) / (link.bandwidth_Bps.value * link.efficiency.value) \
            + float(timed.op.launches) * (link.latency_s.value + steps * link.step_latency_s.value)
        assert float(timed.floors["interconnect"]) == pytest.approx(floor)
        assert float(timed.time_s) >= floor
    nvlink = predict("h100", model="llama-3.1-8b", seq=4096, batch=8, gpus=2)
    pcie = predict("l40s", model="llama-3.1-8b", seq=4096, batch=8, gpus=2)
    t = {p.hw.name: float(next(x for x in p.timing.ops if x.op.name == "layers/allreduce").time_s) for p in (nvlink, pcie)}
    assert t["l40s"] > t["h100-sxm"]  # PCIe peer-to-peer is slower than NVLink


def test_memory_and_fit_are_per_gpu():
    assert not bool(predict("h100", model="llama-3.1-70b", seq=8192).fits)  # 141 GB of weights
    assert bool(predict("h100", model="llama-3.1-70b", seq=8192, gpus=4).fits)
    assert max_batch("h100", "dense", 8192, model="llama-3.1-70b", gpus=1) == 0
    two, four = (int(max_batch("h100", "dense", 32768, model="llama-3.1-70b", gpus=g)) for g in (2, 4))
    assert four > 2 * two  # each GPU holds 1/N of the weights, so more than N× the room for KV


def test_heads_that_do_not_split_are_a_clear_error():
    with pytest.raises(KvsimError, match="do not split over 3 GPUs"):
        predict("h100", model="llama-3.1-70b", seq=4096, gpus=3)
    option = evaluate("h100", "dense", 4096, model="llama-3.1-70b", gpus=3)
    assert not option.fits and "do not split" in option.note
    result = sweep(["h100"], ["dense"], [4096], [1], gpus=[2, 3], model="llama-3.1-70b", progress=False)
    assert {r["gpus"] for r in result.records} == {2}
    assert len(result.skipped) == 1 and "x3" in result.skipped[0]


def test_sweep_and_plan_carry_gpus():
    result = sweep(["h100"], ["dense"], [8192, 65536], [1, 4], gpus=[1, 4], model="llama-3.1-70b", progress=False)
    for record in result.records:
        direct = predict("h100", model="llama-3.1-70b", seq=record["seq"], batch=record["batch"], gpus=record["gpus"])
        assert record["memory_bytes"] == pytest.approx(float(direct.memory_bytes))
        assert record["fits"] == bool(direct.fits)
    assert np.any([r["gpus"] == 4 and r["fits"] for r in result.records])


@pytest.mark.parametrize("gpus,batch", [(2, 1), (4, 8)])
def test_embedding_lookup_is_summed_once_per_step(gpus, batch):
    pred = predict("h100", model="llama-3.1-70b", seq=4096, batch=batch, gpus=gpus)
    embed = _op(pred, "embed_allreduce")  # vocabulary-parallel table: other GPUs' rows read as zero
    assert float(embed.comm_bytes) == pytest.approx(2 * (gpus - 1) / gpus * batch * M70.d_model * 2)
    assert float(embed.launches) == 1


def test_method_collectives_follow_the_runtime():
    """ALISA sums its heads' scores over the GPUs (B·2k·4 bytes per layer); ADORE's controller looks
    its token up in the split embedding table (B·D·b); one GPU has neither."""
    for method, name in (("alisa", "layers/attn/score_allreduce"), ("adore", "adore/controller_embed_allreduce")):
        assert not [op for op in predict("h100", method=method, seq=32768).cost.ops if op.name == name]
    alisa = predict("h100", method="alisa", seq=32768, batch=2, gpus=4, sparsity=0.75)
    k = np.floor(32768 * 0.25 / 2 + 0.5)
    op = _op(alisa, "layers/attn/score_allreduce")
    assert float(op.comm_bytes) == pytest.approx(32 * 2 * (3 / 4) * 2 * (2 * k) * 4)  # 32 layers
    assert float(op.launches) == 32
    adore = _op(predict("h100", method="adore", seq=32768, batch=4, gpus=2), "adore/controller_embed_allreduce")
    assert float(adore.comm_bytes) == pytest.approx(2 * (1 / 2) * 4 * 4096 * 2)
