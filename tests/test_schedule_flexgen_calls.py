"""The executed FlexGen-style policy (runtime/schedule_exec.py: dense attention over a cache whose
oldest 1 − cg is in host memory, runtime/offload.py) issues in its decode steps what kvsim charges
a dense step offloaded by 1 − cg (kvsim.offload), the calls kvsim.schedule.executed times it with:
the host block's copies, its attention as its own piece and the log-sum-exp merge, the evictions
of the rows the boundary passes."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kvsim.methods import get_method  # noqa: E402
from kvsim.predict import step_cost  # noqa: E402
from kvsim.profiles import load_profile  # noqa: E402
from kvsim.runtime.model import Decoder  # noqa: E402
from kvsim.schedule.executed import prediction  # noqa: E402
from kvsim.workload import Workload  # noqa: E402
from test_runtime import TINY, TINY_OPT  # noqa: E402
from test_schedule_exec import CALL_KINDS  # noqa: E402

B, P, G = 2, 40, 8


def _executor_calls(model, kv_gpu, monkeypatch) -> list[dict]:
    """Each decode step's host calls (runtime/launches.py) with the Triton kernels (interpreted)."""
    from kvsim.runtime import ops, schedule_exec
    from kvsim.runtime.launches import LaunchCounter
    from test_runtime_kernels_offload import forced_kernels

    forced_kernels(monkeypatch, True)
    pred = prediction("h100", model, None, B, P, G, placement=(G + 1, G + 1, 0.0, 0.0), dtype="fp32")
    pred["flexgen"]["kv_gpu"] = kv_gpu
    calls, step = [], schedule_exec.decode_step

    def counted(decoder, method, tokens):
        with LaunchCounter() as counter:
            logits = step(decoder, method, tokens)
        calls.append(dict(counter.counts))
        return logits

    monkeypatch.setattr(schedule_exec, "decode_step", counted)
    schedule_exec.generate("flexgen", pred, "cpu", decoder=Decoder(model, None, "cpu", torch.float32, 0,
                                                                   max_positions=P + G))
    ops.reset()
    return calls


@pytest.mark.parametrize("model", [TINY.model_copy(update={"n_layers": 2}), TINY_OPT], ids=["llama", "opt"])
def test_kvsim_charges_the_flexgen_executor_its_offload_calls(model, monkeypatch):
    """Over the steps (a step evicts where ⌊f·n⌋ grows: every other step at f = 0.5, which kvsim
    charges as f of every step), kind by kind; torch calls within one (the pieces' length tensors,
    cached by length, are not charged: kvsim.offload._pieces_op)."""
    f = 0.5
    calls = _executor_calls(model, 1 - f, monkeypatch)
    wl = Workload(seq=P + np.arange(1.0, G + 1), batch=B, dtype="fp32", kv_dtype="fp32")
    cost = step_cost(get_method("dense"), model, load_profile("h100"), wl, offload=f)
    for kind, field in CALL_KINDS.items():
        measured = np.mean([c.get(kind, 0) for c in calls])
        assert measured == pytest.approx(float(np.mean(cost.total(field))), abs=1 if kind == "torch" else 1e-9), kind


def test_kvsim_times_the_executed_flexgen_steps_with_their_offload_path():
    """Each eager step takes at least the compute stream of the dense step offloaded by 1 − cg
    (with its calls above), and the early steps, where the host block is still small, are that
    compute (not the PCIe transfers the LP's rows give the later ones)."""
    from kvsim.models import first_layers
    from kvsim.roofline import step_time

    gen = 512
    pred = prediction("h100", "opt-6.7b", 4, 32, 128, gen, 5.5 * 2**30)
    side = pred["flexgen"]
    f = 1 - side["kv_gpu"]
    assert 0.2 < f < 0.8
    hw, model = load_profile("h100"), first_layers("opt-6.7b", 4)
    wl = Workload(seq=128 + np.arange(1.0, gen + 1), batch=32, dtype="bf16", kv_dtype="bf16")
    compute = step_time(step_cost(get_method("dense"), model, hw, wl, offload=f), hw, "eager", 4).compute_stream_s
    steps = np.array(side["step_s"][1:])
    assert np.all(steps >= compute * (1 - 1e-9)) and steps[0] == pytest.approx(compute[0])
