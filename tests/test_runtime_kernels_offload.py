"""The runtime with its Triton kernels (under the interpreter on CPU, as on a GPU) against the
same runtime on torch references: ALISA's INT8 cache read in the kernel, the fused INT8 append,
and offloaded rows gathered by the GPU kernel, with equal transfer counts."""
import pytest
import torch

from kernel_checks import use_interpreter_without_gpu

use_interpreter_without_gpu()

from kvsim.kernels._common import interpreting  # noqa: E402
from kvsim.runtime import ops  # noqa: E402
from test_runtime import engine  # noqa: E402

if not interpreting():
    pytest.skip("the CUDA runs are tests/gpu/", allow_module_level=True)


def run(method, params, **kw):
    e = engine(method, params, **kw)
    return [e.step(torch.tensor([t, t + 3])) for t in range(3)], e.pcie_bytes


@pytest.mark.parametrize("method,params,options", [
    ("alisa", {"kv_bits": 8}, {}), ("alisa", {"kv_bits": 8}, {"offload": 0.5}),
    ("tidaldecode", {"k": 8}, {"offload": 0.5})])
def test_kernels_match_references_in_the_runtime(method, params, options, monkeypatch):
    ops.reset()
    want, want_bytes = run(method, params, **options)
    kernel_attr = ops._kernel_attr
    monkeypatch.setattr(ops, "_kernel_attr", lambda module, name, _device: kernel_attr(module, name, "cuda"))
    ops.reset()
    got, got_bytes = run(method, params, **options)
    used = set(ops.backends().values())
    monkeypatch.undo()
    ops.reset()
    for g, w in zip(got, want):
        assert ((g - w).norm() / w.norm()).item() < 2e-3  # int8 rounding on the kernel's fp16 dots
    assert got_bytes == want_bytes
    if method == "alisa":
        assert "kvsim.kernels.int8_probs.gathered_decode_attention_int8" in used
        assert "kvsim.kernels.int8kv.dequantize_kv" not in used
    if options:
        assert "kvsim.kernels.host_gather.gather_host_rows" in used
