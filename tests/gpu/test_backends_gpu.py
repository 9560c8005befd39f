"""Every method × every code-path option on CUDA: the decode steps call Triton kernels, or a
torch op listed below on purpose, never a torch reference (``kvsim.runtime.reference.*`` or a
kernels module's ``*_ref``). The prefill (synthetic scores, prompt loading) is not checked: it
is outside the timed steps, and measurement records list its backends apart
(``prefill_backends``). Skipped without CUDA; run on its own: ``pytest tests/gpu``."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from kvsim.runtime import ops  # noqa: E402
from kvsim.runtime.engine import Engine  # noqa: E402
from kvsim.runtime.measure import measure  # noqa: E402

MODEL, LAYERS, B, PREFILL, MAX_SEQ = "llama-3.1-8b", 4, 2, 3000, 3072
OFF = {"offload": 0.5}
INT8 = {"kv_dtype": "int8"}

# torch ops a decode step may call through runtime.ops on purpose, and why
ALLOWED_TORCH = {
    # an offloaded int8 cache quantizes the new token in torch before its ring write
    # (kernels/int8kv.py, a few elementwise ops over B·Hkv·d values); on the GPU-resident cache
    # kernels/int8_rows.py quantizes and writes in one launch
    "kvsim.kernels.int8kv.quantize_kv",
}

# (method, params, engine options): each option that switches a code path at decode time
CASES = [
    ("dense", {}, {}), ("dense", {}, INT8), ("dense", {}, OFF), ("dense", {}, {**INT8, **OFF}),
    ("sparq", {"k": 256}, {}), ("sparq", {"k": 256}, OFF),
    ("quest", {"budget": 512}, {}), ("quest", {"budget": 512}, OFF),
    ("quest", {"budget": 1 << 20}, {}),  # the budget covers the cache: dense attention
    ("alisa", {}, {}), ("alisa", {"kv_bits": 8}, {}), ("alisa", {}, OFF),
    ("alisa", {"kv_bits": 8}, OFF), ("alisa", {"sparsity": 0.0}, {}),
    ("h2o", {"heavy": 256, "recent": 256}, {}),  # full: evict and insert each step
    ("h2o", {"heavy": 4096, "recent": 4096}, {}),  # not full yet: append
    ("tidaldecode", {"k": 256}, {}), ("tidaldecode", {"k": 256, "reselect_layer": 3}, {}),
    ("tidaldecode", {"k": 256, "correction_period": 2}, {}),  # recompute K/V every 2 steps
    ("tidaldecode", {"k": 256}, OFF),  # layer 3 sparse: gathered rows
    ("duoattention", {}, {}), ("duoattention", {"retrieval_ratio": 1.0}, {}),
    ("duoattention", {"retrieval_ratio": 0.0}, {}),
    ("streamingllm", {"recent": 512}, {}), ("streamingllm", {"recent": 8192}, {}),  # window ≥ context
    ("adore", {"m": 1024, "R": 4}, {}), ("adore", {"m": 4096, "R": 4}, {}),
]


def allowed(where: str) -> bool:
    """A Triton kernel of kernels/ or of a method's own kernels*.py, or a torch op listed above."""
    module, _, function = where.rpartition(".")
    triton_module = f".{module}.".find(".kernels.") >= 0 or module.rsplit(".", 1)[-1].startswith("kernels")
    kernel = triton_module and not function.endswith("_ref") and ".reference" not in where
    return kernel or where in ALLOWED_TORCH


def not_a_kernel(used: dict) -> dict:
    return {op: where for op, where in used.items() if not allowed(where)}


@pytest.fixture(scope="module")
def decoder():
    return Engine(MODEL, n_layers=LAYERS, max_seq=MAX_SEQ, batch=B, device="cuda").model


@pytest.mark.parametrize("method,params,options", CASES, ids=[f"{m}-{p}-{o}" for m, p, o in CASES])
def test_decode_steps_use_kernels_only(method, params, options, decoder):
    ops.reset()
    e = Engine(MODEL, method, params, batch=B, max_seq=MAX_SEQ, device="cuda", decoder=decoder, **options)
    e.prefill_synthetic(PREFILL)
    ops.reset()
    logits = [e.step(torch.tensor([t, t + 7], device="cuda")) for t in range(4)]
    e.attention_only_step()
    used = ops.backends()
    assert used and all(k.endswith("@cuda") for k in used), used
    assert not not_a_kernel(used), f"torch fallbacks in decode: {not_a_kernel(used)}"
    assert all(torch.isfinite(x).all() for x in logits)


def test_alisa_int8_reads_int8_in_the_kernel(decoder):
    ops.reset()
    e = Engine(MODEL, "alisa", {"kv_bits": 8}, batch=B, max_seq=MAX_SEQ, device="cuda", decoder=decoder)
    e.prefill_synthetic(PREFILL)
    ops.reset()
    e.step(torch.tensor([1, 2], device="cuda"))
    used = ops.backends()
    assert used["gathered_decode_attention_int8@cuda"] == "kvsim.kernels.int8_probs.gathered_decode_attention_int8"
    assert "dequantize_kv@cuda" not in used and "decode_attention_with_logits@cuda" not in used
    assert used["put_rows_int8@cuda"] == "kvsim.kernels.int8_rows.put_rows_int8" and "quantize_kv@cuda" not in used


def test_records_list_decode_backends_apart():
    rec = measure("alisa", seq=4096, batch=1, model=MODEL, n_layers=2, params={"kv_bits": 8},
                  steps=4, warmup=1, graphs=False)
    assert "attention_with_probs@cuda" in rec["prefill_backends"]  # synthetic prefill scores
    assert not not_a_kernel(rec["backends"]), rec["backends"]


@pytest.mark.parametrize("method,params", [("sparq", {"k": 256}), ("quest", {"budget": 512}),
                                           ("alisa", {}), ("alisa", {"kv_bits": 8}),
                                           ("tidaldecode", {"k": 256})])
def test_offloaded_rows_gathered_on_the_gpu_change_nothing(method, params, decoder):
    """Host rows read in place from pinned memory by the gather kernel: the same logits as the
    cache on the GPU, h2d bytes counted on the device, and no host sync in the step."""
    def run(**kw):
        e = Engine(MODEL, method, params, batch=B, max_seq=MAX_SEQ, device="cuda", decoder=decoder, **kw)
        e.prefill_synthetic(PREFILL)
        return e, [e.step(torch.tensor([t, t + 7], device="cuda")) for t in range(3)]
    _, want = run()
    e, got = run(offload=0.5)
    for g, w in zip(got, want):
        assert ((g - w).norm() / w.norm()).item() < 0.02, method
    e.pcie.reset()
    tokens = torch.tensor([1, 2], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # a host sync inside the step raises
    try:
        e.step(tokens)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert e.pcie_bytes["h2d"] > 0
