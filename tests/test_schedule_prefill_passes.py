"""The schedule executor's prefill in passes over part of the batch (runtime/schedule_exec.py):
its GPU pools are allocated for the whole run first, so kvsim sizes a pass to fit beside them
(kvsim.schedule.executed.sequences_per_pass) and times the passes one after another."""
import os
import weakref

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kvsim.errors import KvsimError  # noqa: E402
from kvsim.methods import get_method  # noqa: E402
from kvsim.profiles import load_profile  # noqa: E402
from kvsim.runtime.model import Decoder  # noqa: E402
from kvsim.runtime.schedule_exec import generate  # noqa: E402
from kvsim.schedule.executed import in_passes, prediction  # noqa: E402
from kvsim.schedule.inputs import step_inputs  # noqa: E402
from kvsim.schedule.validate import compare  # noqa: E402
from schedule_checks import cache_tensors  # noqa: E402
from test_runtime import TINY  # noqa: E402

B, P, G = 5, 24, 3
LLAMA = TINY.model_copy(update={"n_layers": 2})
GIB = 2**30


@pytest.mark.parametrize("policy", ["alisa", "flexgen", "dense"])
def test_a_prefill_in_passes_writes_what_one_pass_writes(policy):
    """Passes of 2, 2 and 1 sequences: the same logits, cache rows (GPU arena, host pools, ALISA's
    scores) and PCIe bytes as the whole batch at once; host rows are written at the prefill
    (ALISA's Phase II from the prompt on, FlexGen's host half)."""
    pred = prediction("h100", LLAMA, None, B, P, G, params={"sparsity": 0.5}, placement=(0, 2, 0.5, 0.3))
    pred["flexgen"]["kv_gpu"] = 0.5
    dec = Decoder(LLAMA, None, "cpu", torch.float32, 0, max_positions=P + G)
    one, passes = (generate(policy, pred, "cpu", decoder=dec, keep_logits=True, prefill_sequences=n, max_steps=1)
                   for n in (B, 2))
    assert passes["prefill_sequences"] == 2 and one["prefill_sequences"] == B
    torch.testing.assert_close(passes["logits"], one["logits"], atol=1e-5, rtol=1e-5)
    a, b = cache_tensors(one), cache_tensors(passes)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-5, msg=name)
    assert [(s["h2d"], s["d2h"]) for s in passes["steps"]] == [(s["h2d"], s["d2h"]) for s in one["steps"]]
    assert policy == "dense" or one["steps"][0]["d2h"] > 0


@pytest.fixture(scope="module")
def opt_pred():
    """The first H100 arena runs' configuration: in one pass, ALISA's prefill was 0.31 GiB and
    FlexGen's 0.20 GiB over the 5.5 GiB budget (kvsim and the runs agreed)."""
    return prediction("h100", "opt-6.7b", 4, 32, 128, 512, 5.5 * GIB)


def test_kvsim_takes_the_most_sequences_whose_pass_fits(opt_pred):
    cap = opt_pred["gpu_capacity_bytes"]
    whole = prediction("h100", "opt-6.7b", 4, 32, 128, 512, 5.5 * GIB, prefill_sequences=32)
    for policy in ("alisa", "flexgen"):
        n = opt_pred[policy]["prefill_sequences"]
        assert 1 <= n < 32 and opt_pred[policy]["gpu_bytes"][0] <= cap < whole[policy]["gpu_bytes"][0]
        more = prediction("h100", "opt-6.7b", 4, 32, 128, 512, 5.5 * GIB, prefill_sequences=n + 1)
        assert more[policy]["gpu_bytes"][0] > cap
        assert whole[policy]["gpu_bytes"][1:] == opt_pred[policy]["gpu_bytes"][1:]  # decode steps unchanged
        assert opt_pred[policy]["step_s"][0] > whole[policy]["step_s"][0]  # the weights read once a pass


def test_passes_take_the_sum_of_their_times_and_one_pass_of_memory():
    inp = step_inputs(get_method("alisa"), LLAMA, load_profile("h100"), 12, 64, 4, "bf16", "bf16")
    assert in_passes(inp, 12) is inp and in_passes(inp, 40) is inp
    thirds, uneven = in_passes(inp, 4), in_passes(inp, 5)  # 4+4+4, and 5+5+2
    assert thirds.compute_s[0] > inp.compute_s[0] and thirds.fixed_gpu[0] < inp.fixed_gpu[0]
    assert uneven.fixed_gpu[0] > thirds.fixed_gpu[0]
    np.testing.assert_array_equal(thirds.compute_s[1:], inp.compute_s[1:])
    np.testing.assert_array_equal(thirds.fixed_gpu[1:], inp.fixed_gpu[1:])


def _record(pred, policy, **extra):
    side = pred[policy]
    steps = [{"step": j, "latency_s": t, "peak_bytes": 1, "h2d": 0, "d2h": 0} for j, t in enumerate(side["step_s"])]
    return {"source": "measured", "kind": "schedule", "policy": policy, "hw": pred["hw"], "model": "opt-6.7b",
            "n_layers": 4, "method": "alisa" if policy == "alisa" else "dense", "params": {},
            "schedule_params": pred["params"], "batch": 32, "seq": 128, "prompt": 128, "gen": 512,
            "gpu_mem_bytes": 5.5 * GIB, "steps": steps, "peak_memory_bytes": 1.0, "pcie_bytes": 1.0, **extra}


def test_validate_compares_the_passes_a_record_ran(opt_pred):
    """Records before passes ran the whole batch at once (no field); kvsim predicts each as it ran."""
    n = opt_pred["alisa"]["prefill_sequences"]
    old, new = compare([_record(opt_pred, "alisa"), _record(opt_pred, "alisa", prefill_sequences=n)])["rows"]
    assert old["prefill_sequences"] == 32 and old["prefill_over_budget"] > 0.3 * GIB
    assert new["prefill_sequences"] == n and new["prefill_over_budget"] <= 0
    assert new["total"]["err"] == pytest.approx(0)
    for bad in (0, 33, 2.5e9, "4", None, 2.5):
        with pytest.raises(KvsimError, match="prefill_sequences must be a (number in|whole number)"):
            compare([_record(opt_pred, "alisa", prefill_sequences=bad)])


def test_a_layer_frees_its_attention_tensors_before_its_mlp():
    """The prefill's peak is the MLP's (kvsim.decoder.activation_bytes: the input and new x, the
    MLP's input, intermediates and output): q, k, v (one qkv tensor) and the attention output are
    gone by then, else a prompt row holds 4·D more."""
    dec = Decoder(LLAMA, None, "cpu", torch.float32, 0, max_positions=P)
    refs, mlp = [], dec.mlp

    def attend(layer, q, k, v):
        o = torch.zeros_like(q)
        refs.extend([weakref.ref(q._base), weakref.ref(o)])
        return o

    def mlp_checked(h, p):
        assert refs and all(r() is None for r in refs)
        return mlp(h, p)

    dec.mlp = mlp_checked
    tokens = torch.randint(LLAMA.vocab, (2, P))
    dec.forward(tokens, torch.arange(P).expand(2, P), attend)
    assert len(refs) == 2 * LLAMA.n_layers
