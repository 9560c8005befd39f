"""kvsim's offloaded step in time (kvsim/offload.py, kvsim.roofline): the link curves that time
copies and gathered rows, the block copies' pipeline behind the layer before, and the join's
efficiency."""
import numpy as np
import pytest

from kvsim.predict import predict


def test_link_curves_time_copies_and_gathered_rows():
    """Measured link curves (bench_pcie.py fields): a copy at its bytes per copy, a zero-copy
    gather at its bytes per row; without them the profile's scalar efficiency."""
    from kvsim.cost import Op
    from kvsim.hardware import Curve
    from kvsim.profiles import load_profile
    from kvsim.roofline import op_time
    shipped = load_profile("h100")  # without its measured curves: the scalar efficiency
    hw = shipped.model_copy(update={"host_link": shipped.host_link.model_copy(
        update={"copy_efficiency": None, "gather_efficiency": None})})
    peak = hw.host_link.h2d_Bps.value
    copy = Op("c", "attention", h2d=1e6, launches=10)  # 100 kB per copy
    gather = Op("g", "attention", h2d=1e6, launches=2, access="gather", link_row_bytes=256)
    plain = float(op_time(copy, hw).floors["link"])
    assert plain == pytest.approx(1e6 / (peak * hw.host_link.efficiency.value))
    link = hw.host_link.model_copy(update={
        "copy_efficiency": Curve(points=[(1e4, 0.1), (1e6, 0.5)], source="test"),
        "gather_efficiency": Curve(points=[(64, 0.2), (1024, 0.6)], source="test")})
    curved = hw.model_copy(update={"host_link": link})
    assert float(op_time(copy, curved).floors["link"]) == pytest.approx(1e6 / (peak * 0.3))  # halfway in log size
    assert float(op_time(gather, curved).floors["link"]) == pytest.approx(1e6 / (peak * 0.4))  # 256 B: halfway from 64 to 1024


def _timed(name, kind, seconds, stream="compute", copy_layers=0.0, access="contiguous", link_row_bytes=0.0):
    from types import SimpleNamespace
    return SimpleNamespace(op=SimpleNamespace(name=name, kind=kind, stream=stream, copy_layers=copy_layers,
                                              access=access, link_row_bytes=link_row_bytes),
                           time_s=np.asarray(seconds))


def _pipelined(copy, blocks, layers=4, gathers=0.0, block_op="offload/attention_pieces"):
    from kvsim.offload import pipelined_step
    ops = [_timed("layers/attn/qkv_proj", "linear", 3.0),
           _timed(block_op, "attention", 5.0, access="assemble" if "assemble" in block_op else "contiguous"),
           _timed("offload/gather_rows", "attention", gathers, link_row_bytes=256.0),
           _timed("lm_head", "linear", 1.0), _timed("offload/fetch_block", "attention", copy, "copy", blocks)]
    return float(pipelined_step(ops, np.asarray(9.0 + gathers), np.asarray(copy), layers))


@pytest.mark.parametrize("copy,want", [(20.0, 9 + 5 + 3 * (5 - 2) + 2),  # link-bound: every layer waits
                                        (4.0, 9 + 1 + 1),  # c = 1 < g = 2: layers 0 and 1 share the link
                                        (8.0, 9 + 2 + 2),  # c = g: the later blocks hide exactly
                                        (0.0, 9)])  # nothing offloaded
def test_block_copies_pipeline_behind_the_layer_before_by_hand(copy, want):
    """runtime/method.py prefetch_blocks, one copy stream per layer (runtime/offload.py): layer
    0's and layer 1's blocks start together when layer 0 attends (layer 0 waits for both), layer
    l + 1's starts when layer l attends, behind the compute issued so far (the link idles while
    layer 0 computes). 4 layers of g = 3/4 + 5/4 = 2 (a projection over every layer, the block
    layers' own op (pieces and merge; int8: the join) over them), an LM head of 1 outside them,
    c = copy / 4:
    step = 9 + c + 3·max(0, c − 2) + min(c, 2)."""
    got = _pipelined(copy, 4.0 if copy else 0.0)
    assert got == pytest.approx(want)
    assert got >= max(9.0, copy)
    assert _pipelined(copy, 4.0 if copy else 0.0, block_op="offload/assemble_block") == pytest.approx(want)  # int8


def test_a_method_with_two_block_layers_waits_for_both():
    """Quest's two dense layers (of 4): c = 6 / 2 = 3 a block, g = 3/4 + 5/2 = 3.25 (the pieces'
    op over the 2 block layers): the two
    blocks share the link, layer 0 waits 2c: 9 + 3 + 0 + 3. A selecting layer's gathers add to
    the compute stream but not to g."""
    assert _pipelined(6.0, 2.0) == pytest.approx(9 + 3 + 3)
    assert _pipelined(6.0, 2.0, gathers=4.0) == pytest.approx(13 + 3 + 3)
    assert _pipelined(6.0, 1.0) == pytest.approx(9 + 6)  # one block layer: nothing shares or hides it


def test_sparse_steps_have_no_copy_stream():
    pred = predict("h100", method="sparq", seq=16384, batch=4, model="llama-3.1-8b", offload=0.5)
    assert float(pred.timing.copy_stream_s) == 0
    assert float(pred.latency_s) == pytest.approx(float(pred.timing.compute_stream_s))  # gathers on the compute stream


@pytest.mark.parametrize("method,params,blocks", [("dense", {}, 32), ("quest", {}, 2),
                                                  ("tidaldecode", {"reselect_layer": 13}, 4)])
def test_offloaded_step_is_the_pipeline_of_its_ops(method, params, blocks):
    """Graphs engine: the predicted step is compute + c + (N − 1)·max(0, c − g) + min(c, g),
    with N the layers that read every row (dense: 32; Quest: its 2 dense layers; TidalDecode: 2
    dense and 2 selection layers), c and g summed from the step's own ops (g: the per-layer ops
    over 32, the pieces' attention and merge over N, gathers outside; LM head and embedding
    outside)."""
    pred = predict("h100", method=method, seq=65536, batch=4, model="llama-3.1-8b", offload=0.25, **params)
    L, t = 32, pred.timing
    fetch = next(o for o in t.ops if o.op.name == "offload/fetch_block")
    assert fetch.op.stream == "copy" and float(fetch.op.copy_layers) == pytest.approx(blocks)
    assert float(fetch.op.launches) == pytest.approx(blocks * 2)  # K and V, per block layer
    layer_ops = [o for o in t.ops if o.op.stream == "compute" and not o.op.name.startswith("offload/gather")
                 and (o.op.name.startswith("layers/") or o.op.kind in ("attention", "cache"))]
    joins = sum(float(o.time_s) for o in layer_ops if o.op.name == "offload/attention_pieces")
    assert joins > 0
    c, g = float(fetch.time_s) / blocks, (sum(float(o.time_s) for o in layer_ops) - joins) / L + joins / blocks
    want = float(t.compute_stream_s) + c + (blocks - 1) * max(0.0, c - g) + min(c, g)
    assert float(pred.latency_s) == pytest.approx(want)
    assert float(pred.latency_s) > max(float(t.compute_stream_s), float(fetch.time_s))  # layer 0's block never hides


def test_block_join_runs_at_the_profile_assemble_efficiency():
    """h100-offload-profile-join.json: the cat + index_select joining block and ring reach 0.318 of
    the HBM peak (host_link.assemble_efficiency), not the streaming memory curve; only int8
    caches still join (16-bit ones attend to the pieces where they lie)."""
    from kvsim.profiles import load_profile
    from kvsim.roofline import op_time
    hw = load_profile("h100")
    pred = predict("h100", method="dense", seq=65536, batch=4, model="llama-3.1-8b", offload=0.5, kv_dtype="int8")
    op = next(o for o in pred.cost.ops if o.name == "offload/assemble_block")
    want = float(op.hbm_bytes) / (hw.memory.bandwidth_Bps.value * hw.host_link.assemble_efficiency.value)
    assert float(op_time(op, hw).time_s) == pytest.approx(want)
    plain = hw.model_copy(update={"host_link": hw.host_link.model_copy(update={"assemble_efficiency": None})})
    assert float(op_time(op, plain).time_s) < 0.5 * want
    bf16 = predict("h100", method="dense", seq=65536, batch=4, model="llama-3.1-8b", offload=0.5)
    pieces = next(o for o in bf16.timing.ops if o.op.name == "offload/attention_pieces")
    assert float(pieces.time_s) < 0.1 * want  # no join: small writes and launches
