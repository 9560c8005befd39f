"""The executed schedule on a CUDA GPU (Triton kernels, pinned host pools, CUDA events), fp32 so
outputs compare exactly: ALISA's plan with offload, deletion and recomputation at a full budget,
and FlexGen's streamed cache, each equal dense attention; the CUDA-only paths (the GPU gather of
host rows and kept inputs, the recompute, a prefill in passes) run. Skipped without CUDA."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from kvsim.runtime import ops  # noqa: E402
from kvsim.runtime.model import Decoder  # noqa: E402
from kvsim.runtime.schedule_exec import generate  # noqa: E402
from kvsim.schedule.executed import prediction  # noqa: E402

MODEL, LAYERS, B, P, G = "llama-3.1-8b", 2, 3, 200, 24  # GQA + RoPE: the recompute's hardest case
PLACE = (0, 12, 0.5, 0.3)  # Phase II from the prompt on (host rows at a full budget), III from step 12


@pytest.fixture(scope="module")
def runs():
    pred = prediction("h100", MODEL, LAYERS, B, P, G, params={"sparsity": 0.0}, placement=PLACE)
    pred["flexgen"]["kv_gpu"] = 0.4
    dec = Decoder(MODEL, LAYERS, "cuda", torch.float32, 0, max_positions=P + G)
    return {p: generate(p, pred, "cuda", "fp32", decoder=dec, keep_logits=True) for p in ("dense", "alisa", "flexgen")}


def test_alisa_plan_and_flexgen_equal_dense_on_cuda(runs):
    last = runs["alisa"]["steps"][-1]
    assert last["deleted_rows"] > 0 and last["host_rows"] > 0 and last["recomputed_rows"] > 0
    assert last["recompute_s"] > 0 and all(s["latency_s"] > 0 for s in runs["alisa"]["steps"])
    for policy in ("alisa", "flexgen"):
        # the Triton kernels' fp32 dots may run in TF32: a wrong row would move logits by O(0.1-1)
        torch.testing.assert_close(runs[policy]["logits"], runs["dense"]["logits"], atol=2e-2, rtol=2e-2)


def test_cuda_paths_are_kernels(runs):
    used = ops.backends()
    assert used["gather_host_rows@cuda"] == "kvsim.kernels.host_gather.gather_host_rows"
    for name in ("decode_attention_with_logits@cuda", "accumulate_weights@cuda", "rope@cuda"):
        assert used[name].startswith("kvsim.kernels.") and not used[name].endswith("_ref"), used[name]


def test_peak_memory_is_the_allocators(runs):
    steps = runs["alisa"]["steps"]
    assert all(s["peak_bytes"] >= runs["alisa"]["decoder"].weight_bytes for s in steps)
    assert sum(s["h2d"] for s in steps) > 0 and sum(s["d2h"] for s in steps) > 0


@pytest.mark.parametrize("policy", ["alisa", "flexgen"])
def test_a_prefill_in_passes_on_cuda_writes_what_one_pass_writes(policy):
    """Passes of 2 and 1 sequences: host rows of part of the batch go to a strided view of the
    pinned pool (a blocking copy on the side stream); the same cache and logits as one pass, and
    a lower prefill peak."""
    from schedule_checks import cache_tensors

    pred = prediction("h100", MODEL, LAYERS, B, P, G, params={"sparsity": 0.5}, placement=PLACE)
    pred["flexgen"]["kv_gpu"] = 0.4
    dec = Decoder(MODEL, LAYERS, "cuda", torch.float32, 0, max_positions=P + G)
    one, passes = (generate(policy, pred, "cuda", "fp32", decoder=dec, keep_logits=True, prefill_sequences=n,
                            max_steps=2) for n in (B, 2))
    torch.testing.assert_close(passes["logits"], one["logits"], atol=2e-2, rtol=2e-2)
    a, b = cache_tensors(one), cache_tensors(passes)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-4, rtol=1e-4, msg=name)
    assert one["steps"][0]["d2h"] == passes["steps"][0]["d2h"] > 0
    assert passes["steps"][0]["peak_bytes"] < one["steps"][0]["peak_bytes"]
