"""The laws every method must obey, as functions of a cost-model class, so that the conformance
suite runs them over the registry and a test can show that a broken method fails them."""
from __future__ import annotations

import numpy as np

from kvsim.profiles import load_profile
from kvsim.kernel_contract import TARGET_PROGRAMS, split_count
from kvsim.methods import get_method
from kvsim.models import load_model
from kvsim.predict import predict
from kvsim.roofline import graph_replay_time

HW = load_profile("h100")
# torch.topk switches to its multi-block select at 20000 candidates a row, faster than the
# single-block select just below (h100-topk-single.jsonl, h100-topk.jsonl): latency laws use
# the profile without the measured top-k costs
HW_SMOOTH = HW.model_copy(update={"topk": None})
TOL = 1e-9


def run(method, model, seq, batch, hw=HW):
    return predict(hw, method=method, seq=seq, batch=batch, model=model)


def attention_bytes(pred):
    return np.asarray(pred.cost.attention().hbm_bytes, dtype=float)


def never_falls(values, axis) -> bool:
    values = np.asarray(values, dtype=float)
    return bool(np.all(np.diff(values, axis=axis) >= -TOL * np.abs(values).max()))


def law_monotone(method, model: str, seqs, batches) -> None:
    """HBM bytes (step and attention), FLOPs, KV memory and latency never fall as the context or
    the batch grows."""
    seq, batch = np.array(sorted(seqs)), np.array(sorted(batches))[:, None]
    pred, smooth = run(method, model, seq, batch), run(method, model, seq, batch, HW_SMOOTH)
    quantities = {"hbm": pred.hbm_bytes, "attention hbm": attention_bytes(pred) - combine_bytes(pred),
                  "flops": pred.flops, "kv": pred.kv_bytes, "latency": without_combine(smooth)}
    for what, value in quantities.items():
        value = np.broadcast_to(value, (len(batch), len(seq)))
        assert never_falls(value, 1), f"{method.name}: {what} falls as the context grows: {value}"
        assert never_falls(value, 0), f"{method.name}: {what} falls as the batch grows: {value}"


def _combines(pred):
    """The split-K combine kernels' timed ops: a larger batch may need one split where a smaller
    one took two and a combine (kernel_contract.split_count), and the runtime drops that kernel
    too (e.g. ADORE at 4k, batch 15 to 16: 179 MB of partials read back less)."""
    return [t for t in pred.timing.ops if t.op.name.endswith("_combine")]


def without_combine(pred):
    """Step latency less the combine kernels; everything else must not get faster with more work."""
    return pred.latency_s - sum((t.time_s for t in _combines(pred)), 0.0)


def combine_bytes(pred):
    """HBM bytes of the combine kernels, which go with them."""
    return sum((np.asarray(t.op.hbm_read, dtype=float) + np.asarray(t.op.hbm_write, dtype=float)
                for t in _combines(pred)), 0.0)


def split_partials(model, seq, batch):
    """Split-K partials (fp32 out, max, sum; written and read back) of the widest split policy a
    kernel uses, over every query head and layer: what any method may add over dense's."""
    wide = split_count(batch, model.n_kv_heads, seq, TARGET_PROGRAMS)
    return model.n_layers * batch * model.n_heads * wide * (model.head_dim + 2) * 4 * 2


def law_overhead(method, model_name: str, seq: int, batch: int) -> None:
    """A method's attention moves at most dense attention's bytes plus the overhead its spec
    declares (and the split-K partials of a wider split)."""
    model = load_model(model_name)
    dense = attention_bytes(run(get_method("dense"), model_name, seq, batch))
    bound = dense + method.overhead_bytes(model, seq, batch) + split_partials(model, seq, batch)
    got = attention_bytes(run(method, model_name, seq, batch))
    assert got <= bound * (1 + 1e-9), f"{method.name}: attention {got:.4g} B > dense + overhead {bound:.4g} B"


def law_full_budget(method, model_name: str, seq: int, batch: int) -> None:
    """At its full budget a method attends to every row: its attention FLOPs and KV memory are at
    least dense's, its bytes at most dense's plus its declared overhead."""
    dense = run(get_method("dense"), model_name, seq, batch)
    got = run(method, model_name, seq, batch)
    flops = float(got.cost.attention().flops), float(dense.cost.attention().flops)
    assert flops[0] >= flops[1] * (1 - 1e-9), f"{method.name}: full budget attends less than dense {flops}"
    assert float(got.kv_bytes) >= float(dense.kv_bytes) * (1 - 1e-9), f"{method.name}: holds fewer rows"
    law_overhead(method, model_name, seq, batch)


def law_totals(method, model: str, seqs, batches) -> None:
    """Step totals are the sums of the ops (bytes, FLOPs, PCIe) and of the ops' times, plus one
    CUDA-graph replay's fixed cost (kvsim.roofline.graph_replay_time)."""
    pred = run(method, model, np.array(seqs), np.array(batches)[:, None])
    ops = pred.cost.ops
    for total, field in ((pred.hbm_bytes, "hbm_bytes"), (pred.flops, "flops")):
        assert np.allclose(total, sum(np.asarray(getattr(op, field), dtype=float) for op in ops), rtol=1e-12)
    assert np.allclose(pred.latency_s, sum(t.time_s for t in pred.timing.ops) + graph_replay_time(pred.hw), rtol=1e-12)
