"""kvsim's offloaded-KV model (kvsim/offload.py): bytes by hand, laws, errors, and its PCIe bytes
against the reference runtime's transfer counters (CPU, fp32, a tiny Llama)."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kvsim.errors import KvsimError
from kvsim.models import ModelConfig
from kvsim.predict import predict

TINY = ModelConfig(name="tiny-llama", family="llama", n_layers=4, d_model=256, n_heads=8, n_kv_heads=2,
                   head_dim=32, ffn_dim=512, vocab=1000, max_context=4096, mlp="swiglu", norm="rmsnorm",
                   source="test")
OFFLOADABLE = [("dense", {}), ("sparq", {"k": 24}), ("alisa", {}), ("quest", {"page_size": 8, "budget": 32}),
               ("tidaldecode", {"k": 24, "reselect_layer": 3})]


def test_dense_offload_by_hand():
    S, B, f = 4096, 2, 0.5
    pred = predict("h100", seq=S, batch=B, model="llama-3.1-8b", offload=f)
    L, Hkv, row = 32, 8, 2 * 128 * 2  # bf16 K and V of one token and KV head
    H = math.floor(f * S)
    fetched = L * B * Hkv * H
    op = next(o for o in pred.cost.ops if o.name == "offload/fetch_block")
    assert float(op.h2d) == fetched * row
    assert op.stream == "copy" and float(op.launches) == L * 2  # one pinned copy of K, one of V
    evict = next(o for o in pred.cost.ops if o.name == "offload/evict_rows")
    assert float(evict.d2h) == L * B * Hkv * f * row  # the boundary's rows; one block: no positions
    assert float(op.host_bytes) == 0  # no host gather either
    rows = next(o for o in pred.cost.ops if o.name == "offload/gather_rows")
    assert float(rows.h2d) == 0 and float(rows.launches) == 0  # dense gathers nothing
    assert float(pred.host_memory_bytes) >= L * B * Hkv * H * row
    on_gpu = predict("h100", seq=S, batch=B, model="llama-3.1-8b")
    in_flight = 2 * B * Hkv * H * row  # layer 0's and layer 1's blocks fetched together
    assert float(on_gpu.memory_bytes - pred.memory_bytes) == pytest.approx(L * B * Hkv * H * row - in_flight)
    assert float(pred.latency_s) > float(on_gpu.latency_s)  # 2 GB over PCIe costs time


def test_only_block_readers_hold_fetched_blocks():
    """ALISA gathers its selected rows: the host block never lands on the GPU, so its memory
    drops by the whole host share; dense holds two layers' blocks at once."""
    S, B, f, L, Hkv, row = 4096, 2, 0.5, 32, 8, 2 * 128 * 2
    H = math.floor(f * S)
    for method, blocks in (("alisa", 0), ("dense", 2)):
        on_gpu = predict("h100", method, seq=S, batch=B, model="llama-3.1-8b")
        off = predict("h100", method, seq=S, batch=B, model="llama-3.1-8b", offload=f)
        held = next(r for r in off.cost.resident if r.name == "offload_blocks")
        assert float(held.gpu) == blocks * B * Hkv * H * row
        assert float(on_gpu.memory_bytes - off.memory_bytes) == pytest.approx((L - blocks) * B * Hkv * H * row)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(OFFLOADABLE), st.integers(40, 200000), st.floats(0.05, 1.0), st.floats(0.0, 0.5))
def test_more_on_the_host_never_moves_fewer_bytes(case, seq, f, extra):
    name, params = case
    low = predict("h100", method=name, seq=seq, batch=2, model=TINY, offload=f * (1 - extra), **params)
    high = predict("h100", method=name, seq=seq, batch=2, model=TINY, offload=f, **params)
    assert float(high.pcie_bytes) >= float(low.pcie_bytes) * (1 - 1e-12)
    dense = predict("h100", seq=seq, batch=2, model=TINY, offload=f)
    assert float(high.cost.pcie_bytes) <= float(dense.cost.pcie_bytes) * (1 + 1e-12) or name == "quest"


def test_offload_refused_for_methods_the_runtime_cannot_offload():
    with pytest.raises(KvsimError, match="cannot run with KV on the host"):
        predict("h100", method="h2o", seq=4096, offload=0.5)
    with pytest.raises(KvsimError, match="correction_period=0"):
        predict("h100", method="tidaldecode", seq=4096, offload=0.5, correction_period=4)
    with pytest.raises(KvsimError, match="fraction"):
        predict("h100", seq=4096, offload=1.5)
    done = subprocess.run([sys.executable, "-m", "kvsim", "predict", "--hw", "h100", "--seq", "4k",
                           "--offload", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and "fraction" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("method,params", OFFLOADABLE)
def test_pcie_bytes_match_the_runtime(method, params):
    """Dense is exact up to the averaging over steps; selection methods are modelled as picking
    older rows evenly, which the runtime's data-dependent choices follow only on average."""
    pytest.importorskip("torch")
    from kvsim.runtime.measure import measure
    rec = measure(method, seq=200, batch=2, model=TINY, n_layers=4, params=params, steps=6, warmup=1,
                  device="cpu", dtype="bf16", offload=0.5, graphs=False)
    contexts = np.arange(rec["contexts"][0], rec["contexts"][1] + 1)  # the timed steps
    pred = predict("h100", method=method, seq=contexts, batch=2, model=TINY,
                   dtype=rec["dtype"], kv_dtype=rec["kv_dtype"], offload=0.5, **params)
    error = abs(float(np.mean(pred.pcie_bytes)) / rec["pcie_bytes"] - 1)
    assert error < (0.02 if method == "dense" else 0.35), (method, error)


def _offload_ops(method="dense", **kw):
    pred = predict("h100", method=method, seq=4096, batch=2, model="llama-3.1-8b", offload=0.5, **kw)
    return {o.name: o for o in pred.cost.ops if o.name.startswith("offload/")}


def test_block_readers_attend_to_three_pieces_and_merge_them_by_hand():
    """runtime/cache.py _attend_pieces over runtime/offload.py pieces: per layer and field a
    pinned copy (.to: an allocation and a copy); beyond the method's one attention call, two
    ring slices of (S − H)/2 rows (charged wrapped), each an attention kernel and, split in 4
    here, its combine; the merge (stack o and lse, softmax, mul, sum, bf16 cast) and its view; a
    movedim and two slices per field; allocations: o, lse and partials of each ring call, the
    block call's lse. No join of block and ring rows, no assemble efficiency."""
    S, B, L, Hkv, G, d = 4096, 2, 32, 8, 4, 128
    ops = _offload_ops()
    fetch, pieces = ops["offload/fetch_block"], ops["offload/attention_pieces"]
    assert "offload/assemble_block" not in ops and pieces.access == "contiguous"
    assert fetch.host_calls["torch"] == L * 2 and fetch.host_calls["torch_host"] == L * 2
    assert pieces.stream == "compute" and pieces.kind == "attention"
    calls = pieces.host_calls
    assert calls["triton"] == L * 2 * 2 and float(pieces.triton_args) == L * 2 * (32 + 5)
    assert calls["torch"] == L * 6 and calls["torch_host"] == L * (3 * 2 + 2 * 3 + 2)
    assert float(pieces.launches) == L * (4 + 6)
    o, lse, w, parts, P = G * d * 2, G * 4, G * d * 4, G * 4 * (d + 2) * 4, 3  # splits = 4
    read = 2 * (o + parts) + 2 * P * o + 3 * P * lse + P * w + w
    write = 2 * (o + parts) + 3 * P * lse + P * o + P * w + w + o
    assert float(pieces.hbm_read) == pytest.approx(L * B * Hkv * read)
    assert float(pieces.hbm_write) == pytest.approx(L * B * Hkv * write)
    assert float(ops["offload/gather_rows"].launches) == 0  # dense gathers nothing


def test_selection_layers_join_their_pieces_logits():
    """TidalDecode's 2 selection layers (of its 4 block layers): each piece writes its logits,
    joined by a cat (read and write S·4 per query head), and the merged lse (a logsumexp: one
    torch call, ATen's nine kernels); a ring call allocates its logits too."""
    S, B, Hq = 4096, 2, 32
    tidal, dense = _offload_ops("tidaldecode")["offload/attention_pieces"], _offload_ops()["offload/attention_pieces"]
    share = 4 / 32  # dense's 32 block layers against TidalDecode's 2 dense + 2 selection layers
    extra = lambda field: float(getattr(tidal, field)) - float(getattr(dense, field)) * share  # noqa: E731
    assert extra("launches") == pytest.approx(2 * (9 + 1))
    assert extra("hbm_write") == pytest.approx(2 * (B * Hq * S * 4 + B * Hq * 4))
    assert extra("hbm_read") == pytest.approx(2 * (B * Hq * S * 4 + B * Hq * 3 * 4))
    assert tidal.host_calls["torch"] - dense.host_calls["torch"] * share == 2 * 2
    assert tidal.host_calls["torch_host"] - dense.host_calls["torch_host"] * share == 2


def test_int8_block_readers_join_block_and_ring_rows_by_hand():
    """An int8 cache keeps the join (runtime/offload.py prefix): per layer and field a pinned
    copy, the ring rows picked (index_select: read + write S − H rows) and joined behind the
    block (cat: read + write S rows), an arange and a modulo for the slots, a view per field;
    six fields (K, V, a scale and a zero point each) of ρ = 2·(d + 4) bytes a row."""
    S, B, L, Hkv, row = 4096, 2, 32, 8, 2 * (128 + 4)
    H = 2048
    ops = _offload_ops(kv_dtype="int8")
    fetch, join = ops["offload/fetch_block"], ops["offload/assemble_block"]
    assert "offload/attention_pieces" not in ops
    assert fetch.host_calls["torch"] == L * 6 and fetch.host_calls["torch_host"] == L * 6
    assert join.stream == "compute" and join.access == "assemble"
    per_list = (S - H) + S  # rows read (and written): index_select of the ring, then cat of all
    assert float(join.hbm_read) == pytest.approx(L * B * Hkv * per_list * row)
    assert float(join.hbm_write) == pytest.approx(L * B * Hkv * per_list * row)
    assert join.host_calls["torch"] == L * (2 + 2 * 6) and join.host_calls["torch_host"] == L * 6


def test_gathers_issue_their_launches_and_time_each_field_at_its_row_size():
    """kernels/host_gather.py: one launch (16 runtime arguments, an output allocation) per field
    and layer; K and V rows of d·b bytes; ALISA's int8 cache adds four fields of one fp16 scale
    or zero point per row, each gathered at 2 bytes per row."""
    L, d = 32, 128
    bf16 = _offload_ops("sparq")["offload/gather_rows"]
    assert float(bf16.link_row_bytes) == d * 2
    assert bf16.host_calls["triton"] == L * 2 and bf16.host_calls["torch_host"] == L * 2
    assert float(bf16.triton_args) == 16 * L * 2
    int8 = _offload_ops("alisa", kv_bits=8)
    rows, scales = int8["offload/gather_rows"], int8["offload/gather_scales"]
    assert float(rows.link_row_bytes) == d and float(scales.link_row_bytes) == 2
    assert float(scales.h2d) == pytest.approx(float(rows.h2d) * 4 * 2 / (2 * d))  # 8 B of 2·d per row
    assert scales.host_calls["triton"] == L * 4
    from kvsim.roofline import op_time
    from kvsim.profiles import load_profile
    hw = load_profile("h100")
    slow = float(op_time(scales, hw).floors["link"])  # 2-byte rows: a small fraction of the link
    assert slow == pytest.approx(float(scales.h2d) / (hw.host_link.h2d_Bps.value * hw.host_link.gather_efficiency.at(2)))


def test_rows_leaving_the_ring_are_issued_on_a_share_of_the_steps():
    """f of the steps move a row per list to the host: per layer an arange and a modulo, per
    field an index, a contiguous copy and the d2h copy (and two views: the rows position-first,
    the host pool's slice; counted in the runtime by tests/test_schedule_flexgen_calls.py)."""
    L, f = 32, 0.5
    evict = _offload_ops()["offload/evict_rows"]
    assert float(evict.launches) == f * L * 2  # the copies
    assert evict.host_calls["torch"] == f * L * (2 + 3 * 2) and evict.host_calls["torch_host"] == f * L * 2 * 2


def test_gathers_launch_only_in_the_layers_that_select():
    """Quest offloaded at 4 layers: 2 dense layers copy blocks, 2 gather (K and V each): 4
    launches, as the profile's _gather_kernel count says."""
    from kvsim.models import first_layers
    pred = predict("h100", method="quest", seq=65536, batch=4, model=first_layers("llama-3.1-8b", 4), offload=0.5)
    gather = next(o.op for o in pred.timing.ops if o.op.name == "offload/gather_rows")
    assert float(gather.launches) == 4.0
