"""Measured costs a profile may carry: torch.topk's multi-block calls (which calls take that
path, by PyTorch's heuristic, and their measured cost as a floor of the op's time), and the
efficiency of rows gathered one by one through an index list."""
import numpy as np
import pytest

from kvsim.cost import Op
from kvsim.profiles import load_profile
from kvsim.kernel_contract import torch_topk_multiblock
from kvsim.methods.attention import topk_op
from kvsim.roofline import op_time
from kvsim.workload import Workload


def lawless(name: str = "a100-80gb-sxm"):
    """A profile without the optional laws (tile rows, gather, re-read, top-k): what kvsim does
    where nothing was measured or transferred."""
    p = load_profile(name)
    return p.model_copy(update={"topk": None, "compute": p.compute.model_copy(update={"tile_rows": None}),
                                "memory": p.memory.model_copy(update={"gather_efficiency": None, "reread_Bps": None})})


@pytest.mark.parametrize("slices,size,multi", [
    (64, 65536, True), (8, 131072, True), (1, 104858, True), (256, 4095, True),
    (1024, 255, False), (8, 4096, False), (20, 19999, False), (5000, 400, True), (5000, 399, False)])

def test_multiblock_heuristic(slices, size, multi):
    assert bool(torch_topk_multiblock(slices, size)) is multi


def test_measured_call_cost_is_a_floor_only_where_the_profile_has_it():
    wl = Workload(seq=65536, batch=8, gen=0, dtype="bf16", kv_dtype="bf16")
    op = topk_op("t", 65536 - 1024, 4096 - 1024, 64, 8, wl)  # SparQ's top-k at 64k × 8, 8 layers
    assert float(op.topk_calls) == 8
    h100 = load_profile("h100-sxm")
    t = op_time(op, h100)
    read = 8 * 64 * (65536 - 1024) * 4
    want = 8 * h100.topk.call_s.value + read / h100.topk.throughput_Bps.value
    assert float(t.time_s) == pytest.approx(want) and str(t.bound_names()) == "library"
    a100 = lawless()  # no top-k law: launch and memory floors only
    assert a100.topk is None and float(op_time(op, a100).floors["library"]) == 0.0
    small = topk_op("t", 255, 31, 1024, 8, wl)  # one single-block kernel a call
    assert float(small.topk_calls) == 0 and float(small.topk_single_calls) == 8


def test_single_block_calls_follow_the_measured_law():
    import json
    from pathlib import Path
    wl = Workload(seq=16384, batch=1, gen=0, dtype="bf16", kv_dtype="bf16")
    h100 = load_profile("h100-sxm")
    law = h100.topk.single_block
    # every measured shape within 20% of the law the profile carries
    results = Path(__file__).parent.parent / "benchmarks" / "results" / "h100-topk-single.jsonl"
    for rec in map(json.loads, results.read_text().splitlines()):
        op = topk_op("t", rec["n"], rec["k"], rec["rows"], 1, wl)
        assert float(op.topk_single_calls) == 1.0 and float(op.topk_calls) == 0.0
        assert float(op_time(op, h100).floors["library"]) == pytest.approx(rec["torch_unsorted_us"] * 1e-6, rel=0.2)
    # ALISA at 16k, batch 1, 8 layers: one row of 14746, about 70 us a layer, far above a launch
    op = topk_op("t", 14746, 1638, 1, 8, wl)
    t = op_time(op, h100)
    assert str(t.bound_names()) == "library" and float(t.time_s) == pytest.approx(8 * law.call_time(1, 14746))
    assert 50e-6 < float(law.call_time(1, 14746)) < 90e-6
    assert float(op_time(op, lawless()).floors["library"]) == 0.0  # no top-k law


def test_single_block_law_grows_with_row_length_waves_and_rows_in_a_wave():
    law = load_profile("h100-sxm").topk.single_block
    sizes, rows = np.array([256, 1024, 4096, 16384]), np.array([1, 8, 132, 133, 1024])
    by_size, by_rows = law.call_time(1, sizes), law.call_time(rows, 1024)
    assert np.all(np.diff(by_size) > 0) and np.all(np.diff(by_rows) > 0)
    # a second wave costs more than filling the first: 132 -> 133 rows adds more than 8 -> 132
    assert by_rows[3] - by_rows[2] > by_rows[2] - by_rows[1]
    # the measured records: one row alone faster than eight at every length (h100-topk-single)
    assert np.all(law.call_time(1, sizes) < law.call_time(8, sizes))


def test_scaling_an_op_scales_its_calls():
    op = Op("t", "attention", hbm_read=10.0, topk_calls=np.array([0.0, 1.0]))
    assert op.scaled(3).topk_calls.tolist() == [0.0, 3.0]


def test_gathered_rows_run_at_the_measured_gather_efficiency():
    from kvsim.models import load_model
    from kvsim.methods.attention import decode_attention
    model, wl = load_model("llama-3.1-8b"), Workload(seq=65536, batch=8, gen=0, dtype="bf16", kv_dtype="bf16")
    rows_in_runs = decode_attention("a", model, wl, rows=8192, layers=32)[0]
    scattered = decode_attention("a", model, wl, rows=8192, layers=32, gathered=True)[0]
    assert scattered.hbm_bytes == rows_in_runs.hbm_bytes and scattered.access == "gather"
    h100 = load_profile("h100-sxm")
    ratio = float(op_time(scattered, h100).floors["memory"] / op_time(rows_in_runs, h100).floors["memory"])
    assert ratio == pytest.approx(1 / h100.memory.gather_efficiency.value)
    a100 = lawless()  # no gather law: same as rows in runs
    assert a100.memory.gather_efficiency is None
    assert float(op_time(scattered, a100).time_s) == float(op_time(rows_in_runs, a100).time_s)


def test_rows_loaded_again_take_the_measured_reread_rate():
    """Quest's per-query-head programs load G·B rows per KV head; the HBM bytes stay the union.
    Where the G page sets overlap (S just above the budget) the loads, not HBM, bound the time."""
    from kvsim.predict import predict
    h100 = load_profile("h100-sxm")
    pred = predict(h100, method="quest", seq=np.array([4106, 65536]), batch=8, model="llama-3.1-8b")
    pages = next(o for o in pred.cost.ops if o.name == "layers/attn/quest_pages")
    row = 2 * 128 * 2 + 4 / 16  # K and V of one head, bf16, + a page index per row
    loaded = 8 * 32 * 4096 * row * 30  # batch · query heads · budget rows · 30 sparse layers
    assert np.allclose(pages.loaded_bytes, loaded)
    memory = op_time(pages, h100).floors["memory"]
    assert memory[0] == pytest.approx(loaded / h100.memory.reread_Bps.value)  # overlap: L2 loads bound
    assert memory[1] > loaded / h100.memory.reread_Bps.value  # 64k: the union read from HBM bounds
    a100 = lawless()  # no re-read law: the HBM bytes alone
    assert op_time(pages, a100).floors["memory"][0] < loaded / h100.memory.reread_Bps.value


def test_gemm_rows_run_in_whole_tiles():
    from kvsim.decoder import layer_ops
    from kvsim.models import load_model
    h100, a100 = load_profile("h100-sxm"), lawless()
    model = load_model("llama-3.1-8b")
    wl = Workload(seq=4096, batch=32, gen=0, dtype="bf16", kv_dtype="bf16")
    up = next(o for o in layer_ops(model, wl, tokens=9.0) if o.name == "layers/mlp/gate_up")  # 288 rows
    tile = h100.compute.tile_rows.value
    padded = float(up.flops) * 384 / 288
    eff = h100.compute.efficiency.at(padded / float(up.launches))
    want = padded / (h100.compute.peak("bf16") * eff)
    assert tile == 128 and float(op_time(up, h100).floors["compute"]) == pytest.approx(want)
    # without a tile law: the FLOPs as they are
    assert float(op_time(up, a100).floors["compute"]) == pytest.approx(
        float(up.flops) / (a100.compute.peak("bf16") * a100.compute.efficiency.at(float(up.flops) / 32)))


def test_profile_numbers_come_from_the_committed_measurements():
    """The measured fields of the H100 profile are what the benchmark scripts' fits give."""
    import json
    from pathlib import Path

    from kvsim.fits import (gather_efficiency_fit, kernel_curve_fit, logits_curve_fit, reread_fit,
                            topk_single_block_fit)
    from kvsim.hardware import SCORE_FAMILIES
    root = Path(__file__).parent.parent
    results = root / "benchmarks" / "results"
    h100 = load_profile("h100-sxm")
    read = lambda name: [json.loads(line) for line in (results / name).read_text().splitlines()]  # noqa: E731
    reread = reread_fit(read("h100-reread.jsonl"))["reread_Bps"]
    assert h100.memory.reread_Bps.value == pytest.approx(reread, rel=0.01)
    kernels = read("h100-kernels.jsonl") + read("h100-kernels-small.jsonl")
    gather = gather_efficiency_fit(kernels, h100.memory.kernel_efficiency["attention"].points,
                                   h100.memory.bandwidth_Bps.value)
    assert h100.memory.gather_efficiency.value == pytest.approx(gather["gather_efficiency"], abs=0.001)
    scores = read("h100-scores-kernels.jsonl") + read("h100-scores-sparq.jsonl")
    for (method, op), family in SCORE_FAMILIES.items():
        rs = [r for r in scores if (r["method"], r["op"]) == (method, op)]
        points = kernel_curve_fit([r["bytes"] for r in rs], [r["us"] * 1e-6 for r in rs],
                                  h100.memory.bandwidth_Bps.value, l2_resident=True)
        shipped = h100.memory.kernel_efficiency[family].points
        assert np.allclose(np.array(shipped), np.array(points), rtol=0.002, atol=1e-4), family
    logits = logits_curve_fit(read("h100-floor-logits.jsonl"), h100)  # on the shipped attention curve
    assert np.allclose(np.array(h100.memory.kernel_efficiency["attention_logits"].points), np.array(logits),
                       rtol=0.002, atol=1e-4)
    law = topk_single_block_fit(read("h100-topk-single.jsonl"), sms=132)
    single = h100.topk.single_block
    for field in ("call_s", "row_s", "size_exponent", "rows_exponent", "wave_rows_exponent"):
        assert getattr(single, field).value == pytest.approx(law[field], rel=0.01), field


def _radix_select_loop(values, k: int) -> int:
    """torch's single-block radixSelect written out (aten SortingRadixSelect.cuh, largest first,
    TopKTypeConfig<float>'s keys): the pass at which it finds the k-th key's prefix alone, 16 if
    it never does."""
    import struct
    raw = [struct.unpack("<I", struct.pack("<f", v))[0] for v in values]
    keys = [(~x & 0xFFFFFFFF) if x >> 31 else x | 0x80000000 for x in raw]
    desired, mask, to_find = 0, 0, k
    for p, pos in enumerate(range(30, -1, -2), start=1):
        match = [key for key in keys if key & mask == desired]
        counts = [sum(1 for key in match if (key >> pos) & 3 == digit) for digit in range(4)]
        for digit in (3, 2, 1, 0):
            if counts[digit] == 1 and to_find == 1:
                return p
            if counts[digit] >= to_find:
                desired, mask = desired | digit << pos, mask | 3 << pos
                break
            to_find -= counts[digit]
    return 16


def test_radix_passes_follow_torchs_select_loop():
    from kvsim.kernel_contract import radix_select_passes
    assert radix_select_passes(np.array([[1.0, 2.0, 3.0]]), 1).tolist() == [5]  # 3.0 and 2.0 share 8 bits
    assert radix_select_passes(np.array([[-1.0, -2.0, 0.5]]), 2).tolist() == [1]  # -1: the only 01 prefix
    assert radix_select_passes(np.array([[3.0, 3.0, 1.0]]), 1).tolist() == [16]  # a tie: every pass
    rng = np.random.default_rng(1)
    rows = np.concatenate([rng.standard_normal((20, 37)), rng.integers(-3, 4, (10, 37)),
                           -np.log(rng.random((10, 37)))]).astype(np.float32)
    for k in (1, 5, 36):
        assert radix_select_passes(rows, k).tolist() == [_radix_select_loop(row.tolist(), k) for row in rows]
