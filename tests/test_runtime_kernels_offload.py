"""The runtime with its Triton kernels (under the interpreter on CPU, as on a GPU) against the
same runtime on torch references: ALISA's INT8 cache read in the kernel, the fused INT8 append,
and offloaded rows gathered by the GPU kernel, with equal transfer counts."""
import numpy as np
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


# ---- attention over an offloaded cache's pieces (runtime/cache.py _attend_pieces) ----------------
def caches(fraction, dtype=torch.float32, rows=70, max_seq=96, heads=(6, 2)):
    """The same rows [0, rows) in a device cache and an offloaded one (one layer, batch 2, d 32)."""
    from kvsim.runtime.cache import CacheSpec, KVCache
    spec = CacheSpec(n_layers=1, batch=2, n_heads=heads[0], n_kv_heads=heads[1], head_dim=32, max_seq=max_seq,
                     device=torch.device("cpu"), dtype=dtype)
    dev, off = KVCache(spec), KVCache(spec.with_(offload=fraction))
    k, v = (torch.randn(2, heads[1], rows, 32).to(dtype) for _ in range(2))
    for cache in (dev, off):
        cache.load(0, k, v)
    return dev, off


def forced_kernels(monkeypatch, on: bool) -> None:
    ops.reset()
    if on:
        kernel_attr = ops._kernel_attr
        monkeypatch.setattr(ops, "_kernel_attr", lambda module, name, _device: kernel_attr(module, name, "cuda"))


@pytest.mark.parametrize("kernels", [False, True])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_offloaded_attention_over_pieces_equals_the_device_cache(fraction, kernels, monkeypatch):
    """Appending rows past the boundary (the block prefetched before the append, as a later
    layer takes it, or uploaded after it, as layer 0 does): attention and its logits over the
    block and ring slices merged by log-sum-exp equal the device cache's; the ring wraps."""
    torch.manual_seed(6)
    forced_kernels(monkeypatch, kernels)
    dev, off = caches(fraction)
    store, pieces_seen = off.layers[0], set()
    for pos in range(70, 82):
        if pos % 2:
            off.prefetch(0)
        k, v = torch.randn(2, 2, 32), torch.randn(2, 2, 32)
        dev.put(0, pos, k, v), off.put(0, pos, k, v)
        pieces_seen.add((store.boundary > 0) + len(store._ring_runs(store.boundary, pos + 1)))
        q, n = torch.randn(2, 6, 32), pos + 1
        logits = pos % 3 == 0
        if logits and pos % 2:
            off.prefetch(0)
        got, want = off.attend_all(0, q, n, logits=logits), dev.attend_all(0, q, n, logits=logits)
        if logits:
            torch.testing.assert_close(got[2], want[2][..., :n], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
            got, want = got[0], want[0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert 3 in pieces_seen  # a wrapped ring: block + two slot ranges
    ops.reset()


@pytest.mark.parametrize("logits", [False, True])
def test_offloaded_attention_issues_what_the_model_charges(logits, monkeypatch):
    """Host calls of one block layer's attend_all (Triton kernels, bf16, the block prefetched,
    the pieces' lengths seen before): kvsim's one attention call over the S rows with its
    combine, plus offload/attention_pieces for one block layer (kvsim/offload.py), plus with
    logits the block call's logits and lse buffers (TidalDecode's own attention op counts them).
    Shapes where every piece splits, as the model's two ring slices of (S − H)/2 rows do."""
    from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS
    from kvsim.methods.attention import decode_attention
    from kvsim.models import ModelConfig
    from kvsim.offload import _pieces_op
    from kvsim.runtime.launches import count_launches
    from kvsim.workload import Workload
    torch.manual_seed(7)
    forced_kernels(monkeypatch, True)
    dev, off = caches(0.25, torch.bfloat16, rows=1199, max_seq=1216, heads=(8, 2))
    off.put(0, 1199, torch.randn(2, 2, 32), torch.randn(2, 2, 32))
    store, q = off.layers[0], torch.randn(2, 8, 32).bfloat16()
    assert store.boundary == 300 and [m for _, m in store._ring_runs(300, 1200)] == [613, 287]
    off.prefetch(0), off.attend_all(0, q, 1200, logits=logits), off.prefetch(0)
    got = count_launches(lambda: off.attend_all(0, q, 1200, logits=logits))
    ops.reset()
    model = ModelConfig(name="tiny", family="llama", n_layers=1, d_model=256, n_heads=8, n_kv_heads=2, head_dim=32,
                        ffn_dim=512, vocab=1000, max_context=4096, mlp="swiglu", norm="rmsnorm", source="test")
    wl = Workload(seq=np.asarray(1200.0), batch=np.asarray(2.0), dtype="bf16", kv_dtype="bf16")
    ops_ = [*decode_attention("a", model, wl, rows=1200.0, layers=1, target=DENSE_TARGET_PROGRAMS),
            _pieces_op(model, wl, 300.0, 1.0, float(logits), 2)]
    want = {kind: sum(float(op.host_calls[kind]) for op in ops_) for kind in ("torch", "torch_host", "triton")}
    want["torch_host"] += 2 * logits
    want["triton_args"] = sum(float(op.triton_args) for op in ops_)
    assert {kind: got[kind] for kind in want} == want and got["sync"] == 0
