"""The executed schedule (runtime/schedule_exec.py) on the CPU, fp32, tiny models: it follows the
plan's phases, deleted rows are gone from the GPU pools and come back exactly by recomputation,
the PCIe counters equal the bytes the placement moves, and at a full budget ALISA's and
FlexGen's outputs equal dense attention's."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kvsim.runtime.model import Decoder  # noqa: E402
from kvsim.runtime.schedule_exec import ScheduleUnsupported, generate  # noqa: E402
from kvsim.runtime.schedule_placement import GONE, GPU  # noqa: E402
from kvsim.runtime.schedule_store import recompute_kv  # noqa: E402
from kvsim.schedule.executed import alpha_count, prediction  # noqa: E402
from test_runtime import TINY, TINY_OPT  # noqa: E402

B, P, G = 2, 40, 14
LLAMA = TINY.model_copy(update={"n_layers": 2})
PLACE = (0, 6, 0.5, 0.3)  # p1, p2, α, β: Phase II from the prompt on, Phase III from step 6
PHASES = (3, 8, 0.6, 0.25)  # Phase I, then II from step 3, III from step 8


def _pred(model, placement, sparsity=0.0, kv_gpu=None):
    pred = prediction("h100", model, None, B, P, G, params={"sparsity": sparsity}, placement=placement)
    if kv_gpu is not None:
        pred["flexgen"]["kv_gpu"] = kv_gpu
    return pred


def _decoder(model):
    return Decoder(model, None, "cpu", torch.float32, 0, max_positions=P + G)


@pytest.fixture(scope="module")
def runs():
    pred = _pred(LLAMA, PLACE, kv_gpu=0.5)
    dec = _decoder(LLAMA)
    return pred, dec, {p: generate(p, pred, "cpu", decoder=dec, keep_logits=True) for p in ("dense", "alisa", "flexgen")}


def test_full_budget_alisa_and_flexgen_equal_dense(runs):
    _, _, out = runs
    assert out["alisa"]["steps"][-1]["deleted_rows"] > 0 and out["alisa"]["steps"][-1]["host_rows"] > 0
    assert out["flexgen"]["steps"][-1]["h2d"] > 0
    for policy in ("alisa", "flexgen"):
        torch.testing.assert_close(out[policy]["logits"], out["dense"]["logits"], atol=2e-4, rtol=1e-4)


def test_phase_boundaries_and_deleted_rows_absent():
    pred = _pred(TINY_OPT, PHASES, sparsity=0.8)
    tokens = pred["alisa"]["tokens"]
    run = generate("alisa", pred, "cpu", decoder=_decoder(TINY_OPT))
    phases = [s["phase"] for s in run["steps"]]
    assert phases == ["prefill"] + ["I"] * 2 + ["II"] * 5 + ["III"] * (G - 7)
    for s in run["steps"]:
        j = s["step"]
        assert s["deleted_rows"] == tokens["deleted"][j] and (s["deleted_rows"] > 0) == (j >= 8)
        host = alpha_count(max(tokens["deleted"][j], tokens["start"]), tokens["old"][j], tokens["start"], tokens["alpha"])
        assert s["host_rows"] == host and s["gpu_rows"] == tokens["n"][j] - tokens["deleted"][j] - host
        assert (s["recomputed_rows"] > 0) == (j >= 8)
    place = run["method"].place
    gone = [p for p, (w, _) in place.kv.items() if w == GONE]
    assert gone == list(range(tokens["deleted"][-1])) and len(place.kv) == P + G
    assert max(s["gpu_rows"] for s in run["steps"]) == tokens["gpu_rows"] < P + G  # the plan's peak
    # the arena: K/V and x rows at the step they hold the most together (at most both peaks)
    pieces = 2 * TINY_OPT.n_kv_heads * tokens["gpu_rows"] + TINY_OPT.d_model // TINY_OPT.head_dim * tokens["x_gpu_rows"]
    assert run["method"].kv.layers[0].device_bytes == tokens["arena_pieces"] * B * TINY_OPT.head_dim * 4
    assert tokens["arena_pieces"] <= pieces


def test_recomputed_kv_equals_the_original():
    """K/V of the deleted positions, recomputed from their kept inputs, equal the rows the model
    wrote before deletion (RoPE included)."""
    pred, dec = _pred(LLAMA, PHASES), _decoder(LLAMA)
    before = generate("alisa", pred, "cpu", decoder=dec, max_steps=7)["method"]  # nothing deleted yet
    after = generate("alisa", pred, "cpu", decoder=dec, max_steps=8)["method"]
    gone = [p for p, (w, _) in after.place.kv.items() if w == GONE]
    assert gone and all(before.place.kv[p][0] == GPU for p in gone)
    pos = torch.tensor(gone)[None].expand(B, -1)
    for layer, (old, new) in enumerate(zip(before.kv.layers, after.kv.layers)):
        slots = [before.place.kv[p][1] for p in gone]
        x = torch.stack([new.xdev[:, :, after.place.x[p][1]].reshape(B, -1) if after.place.x[p][0] == GPU
                         else new.xhost[after.place.x[p][1]].reshape(B, -1) for p in gone], 1)
        k, v = recompute_kv(dec, layer, x, pos, dec.rotary)
        torch.testing.assert_close(k, old.dev["k"][:, :, slots], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, old.dev["v"][:, :, slots], atol=1e-5, rtol=1e-5)
        new.recompute_rows = pos
        got = new.compact(pos[:, None].expand(B, new.dev["k"].shape[1], -1).int())
        torch.testing.assert_close(got["k"], old.dev["k"][:, :, slots], atol=1e-5, rtol=1e-5)


def test_pcie_counters_equal_the_bytes_the_placement_moves(runs):
    """Full budget (every row selected): each step reads every host K/V row and the host x of
    every deleted row (h2d), and writes the rows that left for the host (d2h)."""
    pred, dec, out = runs
    tokens, cfg, L, b = pred["alisa"]["tokens"], LLAMA, LLAMA.n_layers, 4
    kv_row, x_row = L * B * cfg.n_kv_heads * 2 * cfg.head_dim * b, L * B * cfg.d_model * b
    moved_kv = moved_x = 0
    for s in out["alisa"]["steps"]:
        j = s["step"]
        x_host_deleted = alpha_count(tokens["start"], min(tokens["deleted"][j], tokens["old"][j]),
                                     tokens["start"], tokens["alpha"])
        if j:
            assert s["h2d"] == s["host_rows"] * kv_row + x_host_deleted * x_row
        old_before = 0 if j == 0 else tokens["old"][j - 1]
        lo = max(old_before, tokens["deleted"][j])
        new_kv = alpha_count(lo, max(lo, tokens["old"][j]), tokens["start"], tokens["alpha"])
        new_x = alpha_count(old_before, max(old_before, min(tokens["old"][j], tokens["last"])),
                            tokens["start"], tokens["alpha"])
        assert s["d2h"] == new_kv * kv_row + new_x * x_row
        moved_kv, moved_x = moved_kv + new_kv, moved_x + new_x
    assert moved_kv > 0 and moved_x > 0
    # FlexGen, f = 0.5: ⌊f·m⌋ of a layer's m rows on the host, each layer's block uploaded once a
    # step (runtime/method.py prefetch_blocks): layer 0's when it attends (after its new row),
    # layer 1's while layer 0 attends (before its own new row); nothing for the next step
    host, unit = (lambda m: int(np.floor(0.5 * m))), kv_row // L
    for s in out["flexgen"]["steps"][1:]:
        m = P + s["step"]
        assert s["h2d"] == (host(m) + host(m - 1)) * unit
        assert s["d2h"] == (host(m) - host(m - 1)) * kv_row


def test_weight_streaming_plans_are_refused():
    pred = _pred(LLAMA, PLACE)
    pred["alisa"]["weights_gpu"] = 0.9
    with pytest.raises(ScheduleUnsupported, match="streams 10.0% of the weights"):
        generate("alisa", pred, "cpu", decoder=_decoder(LLAMA), max_steps=1)


def _exact_bound(self, selected):
    """The executor before issue 14's speed-ups: the most deleted rows any sequence selected,
    read back from the device (a host sync per step)."""
    k = self.window(self.n + 1)
    if self.place.deleted == 0:
        return 0
    return int(torch.stack([(s[:, :-k] < self.place.deleted).sum(-1).max() for s in self._sel]).max())


def test_the_executor_matches_a_straightforward_reference(monkeypatch):
    """In-place Phase I reads, evictions by per-step indices and Phase III recomputation sized from
    the plan's counts (padded, masked) change nothing the run records: the same tokens, PCIe
    bytes, pools, peaks and recomputed rows as compact reads and the exact (synced) row count;
    logits bit-identical until Phase III, and there within fp32 rounding (the recomputation's
    matrix product has more rows)."""
    from kvsim.runtime import schedule_exec, schedule_store

    pred, dec = _pred(TINY_OPT, PHASES, sparsity=0.8), _decoder(TINY_OPT)
    fast = generate("alisa", pred, "cpu", decoder=dec, keep_logits=True)
    monkeypatch.setattr(schedule_store.PlannedRows, "in_place", False)
    monkeypatch.setattr(schedule_exec.ScheduledALISA, "recompute_bound", _exact_bound)
    ref = generate("alisa", pred, "cpu", decoder=dec, keep_logits=True)
    drop = ("latency_s", "recompute_s")
    steps = [[{k: v for k, v in s.items() if k not in drop} for s in run["steps"]] for run in (fast, ref)]
    assert steps[0] == steps[1]
    assert any(s["recomputed_rows"] for s in steps[0]) and any(s["d2h"] for s in steps[0][1:])
    first_iii = [s["phase"] for s in steps[0]].index("III")
    assert torch.equal(fast["logits"][:, :first_iii], ref["logits"][:, :first_iii])
    torch.testing.assert_close(fast["logits"], ref["logits"], atol=1e-4, rtol=1e-5)
    assert torch.equal(fast["logits"].argmax(-1), ref["logits"].argmax(-1))


def test_a_phase_three_step_issues_no_host_sync(monkeypatch):
    """Begin a Phase III step (recomputation included) to its logits: no value comes back to the
    host (.item, .tolist, int/float/bool of a tensor) and no data-dependent op runs."""
    from kvsim.runtime.launches import LaunchCounter
    from kvsim.runtime.schedule_exec import _forward

    pred, dec = _pred(LLAMA, PHASES, sparsity=0.7), _decoder(LLAMA)
    run = generate("alisa", pred, "cpu", decoder=dec, max_steps=9)
    method, tokens = run["method"], run["tokens"][:, -1]
    assert run["steps"][-1]["phase"] == "III"

    def synced(*_, **__):
        raise AssertionError("a host sync in a Phase III step")

    with LaunchCounter() as counter:
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__"):
                m.setattr(torch.Tensor, name, synced)
            method.begin_step(tokens)
            pos = torch.full((B, 1), method.n, dtype=torch.long)
            logits = _forward(dec, tokens[:, None], pos, method.attend, method.layer_input)
            method.end_step()
    assert all(s.recompute_rows is not None for s in method.kv.layers)
    assert counter.counts.get("sync", 0) == 0 and logits.shape[0] == B


CALL_KINDS = {"torch": "torch_calls", "torch_gemm": "gemm_calls", "torch_host": "torch_host_calls",
              "triton": "triton_launches", "triton_args": "triton_args", "sync": "host_syncs"}
G_WHOLE = 16  # P + G = 56 tokens: β = 0.75 deletes a whole 42 by the end (kvsim's count is the executor's)


def _executor_calls(model, placement, monkeypatch) -> dict:
    """{step: (counts, index lists)} of an ALISA run with the Triton kernels (interpreted): each
    timed decode step's host calls (runtime/launches.py) and the host-built index lists it sent."""
    from kvsim.runtime import ops, schedule_exec, schedule_placement
    from kvsim.runtime.launches import LaunchCounter
    from test_runtime_kernels_offload import forced_kernels

    forced_kernels(monkeypatch, True)
    pred = prediction("h100", model, None, B, P, G_WHOLE, params={"sparsity": 0.8}, placement=placement)
    lists, calls, index, step = [0], {}, schedule_placement._index, schedule_exec.decode_step

    def counted_index(*args, **kwargs):
        lists[0] += 1
        return index(*args, **kwargs)

    def counted_step(decoder, method, tokens):
        lists[0] = 0
        with LaunchCounter() as counter:
            logits = step(decoder, method, tokens)
        calls[method.n - P] = (dict(counter.counts), lists[0])
        return logits

    monkeypatch.setattr(schedule_placement, "_index", counted_index)
    monkeypatch.setattr(schedule_exec, "decode_step", counted_step)
    decoder = Decoder(model, None, "cpu", torch.float32, 0, max_positions=P + G_WHOLE)
    run = generate("alisa", pred, "cpu", decoder=decoder)
    ops.reset()
    return calls, [s["phase"] for s in run["steps"]]


def _kvsim_calls(model, placement) -> dict:
    """{kind: per decode step} kvsim's eager schedule charges: ALISA's own step at each context
    and the schedule's ops (kvsim/schedule/ops.py step_ops)."""
    from kvsim.cost import Cost
    from kvsim.methods import get_method
    from kvsim.predict import step_cost
    from kvsim.profiles import load_profile
    from kvsim.schedule.inputs import step_inputs
    from kvsim.schedule.ops import step_ops
    from kvsim.schedule.placement import geometry
    from kvsim.workload import Workload

    hw, method = load_profile("h100"), get_method("alisa", {"sparsity": 0.8})
    p1, p2, alpha, beta = placement
    inp = step_inputs(method, model, hw, B, P, G_WHOLE, "fp32", "fp32", "eager")
    geo = geometry(inp, np.array([[p1]]), np.array([[p2]]), np.array([[beta]]))
    wl = method.kv_workload(Workload(seq=P, batch=B, gen=G_WHOLE, dtype="fp32", kv_dtype="fp32"))
    cost = step_cost(method, model, hw, wl.with_(seq=P + np.arange(1.0, G_WHOLE + 1)))
    schedule = Cost(tuple(step_ops(inp, geo, np.array([[alpha]]), 1.0)))
    return {kind: np.broadcast_to(cost.total(field), (G_WHOLE,))
            + np.broadcast_to(schedule.total(field), (1, G_WHOLE + 1))[0, 1:] for kind, field in CALL_KINDS.items()}


# plans that delete rows; in the last two the kept x grows after the K/V rows peak (β = 0.85 deletes
# generated tokens too), and in II-III the x of Phase-II rows leaves for the CPU
DELETING = {"I-II-III": (3, 8, 1.0, 0.75), "I-III": (G_WHOLE + 1, 8, 0.0, 0.75),
            "I-III-late": (G_WHOLE + 1, 2, 0.0, 0.85), "II-III": (1, 3, 1.0, 0.85)}


@pytest.mark.parametrize("placement", [*DELETING.values(), (1, G_WHOLE + 1, 1.0, 0.0)], ids=[*DELETING, "II"])
@pytest.mark.parametrize("model", [TINY_OPT, LLAMA], ids=["opt", "llama"])
def test_kvsim_charges_every_step_the_calls_the_executor_issues(model, placement, monkeypatch):
    """kvsim's eager schedule charges each decode step what the executor issues in it, by kind:
    ALISA's own step plus the staging of its selections, the position tables, the kept x, the
    arena's row moves, the gathers, evictions and recomputations (kvsim/schedule/ops.py). Each host-built index
    list costs 2 more torch calls on CUDA (pin_memory, the copy) than on the CPU; ALISA's step
    builds a lengths tensor where its list length first occurs (≤ 1 torch call, as in
    tests/test_engine.py)."""
    calls, phases = _executor_calls(model, placement, monkeypatch)
    modelled = _kvsim_calls(model, placement)
    assert {"I", "II", "III"} & set(phases[1:]) >= ({"II"} if placement[0] == 1 else {"I", "III"})
    for j, (counts, lists) in calls.items():
        for kind, count in counts.items():
            on_cuda = count + (2 * lists if kind == "torch" else 0)
            tolerance = 1 if kind == "torch" else 1e-9
            assert -1e-9 <= on_cuda - modelled[kind][j - 1] <= tolerance, (j, phases[j], kind, on_cuda, modelled[kind][j - 1])


@pytest.mark.parametrize("placement", DELETING.values(), ids=DELETING)
def test_the_gpu_arena_is_what_kvsim_counts(placement):
    """Each layer holds its K/V and kept x in one GPU arena as large as the most bytes they need
    together at any step (kvsim's arena_bytes), not each pool's own peak; kvsim's prediction of
    the run holds that arena at every step, so its peak GPU memory (as kvsim validate compares
    it) is not below what the run holds."""
    cfg = LLAMA
    pred = prediction("h100", cfg, None, B, P, G_WHOLE, params={"sparsity": 0.8}, placement=placement, dtype="fp32")
    tokens, side = pred["alisa"]["tokens"], pred["alisa"]
    run = generate("alisa", pred, "cpu", decoder=Decoder(cfg, None, "cpu", torch.float32, 0, max_positions=P + G_WHOLE))
    method = run["method"]
    rows = 2 * cfg.n_kv_heads * tokens["gpu_rows"] + cfg.d_model // cfg.head_dim * tokens["x_gpu_rows"]
    pools = rows * B * cfg.head_dim * 4  # both pools at their own peaks, fp32
    assert [layer.device_bytes for layer in method.kv.layers] == [tokens["arena_bytes"]] * cfg.n_layers
    assert tokens["arena_bytes"] < pools if placement[1] < 8 else tokens["arena_bytes"] <= pools
    assert max(side["gpu_kv"]) == method.device_bytes  # every layer's arena and ALISA's scores
    peak = max(s["peak_bytes"] for s in run["steps"][1:])  # on the CPU: weights + cache tensors
    assert max(side["gpu_bytes"][1:]) - pred["workspace_bytes"] >= peak
