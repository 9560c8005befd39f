"""On a CUDA GPU, every backend a decode step of every registered method uses is a Triton kernel
(kernels/ or a method's own kernels*.py) or an allowed library op, never a torch reference.
Skipped without CUDA; run on its own: ``pytest tests/gpu``."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from kvsim.methods import REGISTRY, spec_of  # noqa: E402
from runtime import ops  # noqa: E402
from runtime.engine import Engine  # noqa: E402

MODEL, LAYERS, B, PREFILL, MAX_SEQ = "llama-3.1-8b", 4, 2, 3000, 3072
# plain torch on every device by design (kernels/int8kv.py: quantization is elementwise)
ALLOWED_LIBRARY_OPS = {"kernels.int8kv.quantize_kv", "kernels.int8kv.dequantize_kv"}


def is_kernel(where: str) -> bool:
    module, _, function = where.rpartition(".")
    triton_module = module.startswith("kernels.") or (module.startswith("kvsim.methods.")
                                                      and module.rsplit(".", 1)[-1].startswith("kernels"))
    return triton_module and not function.endswith("_ref")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_decode_backend_is_a_kernel(name):
    params = spec_of(name).small_budget
    if name == "tidaldecode":
        params = {**params, "reselect_layer": 3}
    e = Engine(MODEL, name, params, batch=B, max_seq=MAX_SEQ, n_layers=LAYERS, device="cuda")
    e.prefill_synthetic(PREFILL)
    ops.reset()  # the prefill's synthetic scores use runtime.reference.attention_with_probs
    e.step(torch.tensor([1, 2], device="cuda"))
    e.attention_only_step()
    used = ops.backends()
    assert used, name
    bad = {op: where for op, where in used.items() if not is_kernel(where) and where not in ALLOWED_LIBRARY_OPS}
    assert not bad, f"{name}: decode ran torch references {bad}"
