"""Attention ops for the runtime: the Triton kernels (``KERNEL_MODULES``) on CUDA, their
``<name>_ref`` torch references on CPU, and ``kvsim.runtime.reference`` where kernels/ lacks a
function. ``KVSIM_RUNTIME_REFERENCE=1`` forces torch references everywhere (the runtime's own,
else the kernels module's ``*_ref``).
``backends()`` says which implementation each op used (it goes into measurement records).

The int8 functions resolve as one group: quantize, dequantize and int8 attention must share a
scale/zero convention, so they all come from kernels.int8kv only when it has all three.
"""
from __future__ import annotations

import importlib
import os

import torch

from . import reference

# op name -> the module of its Triton kernel and torch reference
KERNEL_MODULES = {
    "decode_attention": "kvsim.kernels.decode", "gathered_decode_attention": "kvsim.kernels.gather",
    "decode_attention_with_logits": "kvsim.kernels.scores", "accumulate_weights": "kvsim.kernels.scores",
    "rope_decode_attention": "kvsim.kernels.decode", "positional_decode_attention": "kvsim.kernels.decode",
    "merge_partials": "kvsim.kernels.decode",
    "rope": "kvsim.kernels.rope", "put_rows": "kvsim.kernels.rows",
    "quantize_kv": "kvsim.kernels.int8kv", "dequantize_kv": "kvsim.kernels.int8kv", "decode_attention_int8": "kvsim.kernels.int8kv",
    # kernels one method uses sit beside it
    "sparq_scores_and_group": "kvsim.methods.sparq.kernels",
    "sparq_components": "kvsim.methods.sparq.kernels_steps", "sparq_mix": "kvsim.methods.sparq.kernels_steps",
    "quest_page_scores": "kvsim.methods.quest.kernels", "evict_insert": "kvsim.methods.h2o.kernels",
    "adore_score": "kvsim.methods.adore.kernels", "adore_release": "kvsim.methods.adore.kernels",
    "gathered_decode_attention_int8": "kvsim.kernels.int8_probs", "gather_host_rows": "kvsim.kernels.host_gather",
    "put_rows_int8": "kvsim.kernels.int8_rows",
}
GROUPS = {"kvsim.kernels.int8kv": ("quantize_kv", "dequantize_kv", "decode_attention_int8")}
# kernels/int8kv.py writes these in plain torch, one function for every device (no *_ref)
TORCH_EVERYWHERE = ("quantize_kv", "dequantize_kv")

_resolved: dict[tuple[str, str], tuple] = {}
_used: dict[str, str] = {}


def _kernel_attr(module: str, name: str, device_type: str):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None, None
    attr = name if device_type == "cuda" else f"{name}_ref"
    if not hasattr(mod, attr) and name in TORCH_EVERYWHERE:
        attr = name
    return getattr(mod, attr, None), f"{module}.{attr}"


def _resolve(name: str, device_type: str) -> tuple:
    key = (name, device_type)
    if key in _resolved:
        return _resolved[key]
    fn, where = None, None
    module = KERNEL_MODULES.get(name)
    if module and not os.environ.get("KVSIM_RUNTIME_REFERENCE"):
        found = [_kernel_attr(module, member, device_type) for member in GROUPS.get(module, (name,))]
        if all(f is not None for f, _ in found):
            fn, where = _kernel_attr(module, name, device_type)
    if fn is None and hasattr(reference, f"{name}_ref"):
        fn, where = getattr(reference, f"{name}_ref"), f"kvsim.runtime.reference.{name}_ref"
    if fn is None:  # no runtime copy: the kernels module's own torch reference
        fn = getattr(importlib.import_module(module), f"{name}_ref")
        where = f"{module}.{name}_ref"
    _resolved[key] = (fn, where)
    return fn, where


def _call(name: str, device: torch.device, *args, **kwargs):
    fn, where = _resolve(name, device.type)
    _used[f"{name}@{device.type}"] = where
    return fn(*args, **kwargs)


def backends() -> dict[str, str]:
    """{op@device: implementation} for every op called so far in this process."""
    return dict(sorted(_used.items()))


def reset() -> None:
    """Forget resolutions (after kernels/ changes or the environment variable flips)."""
    _resolved.clear()
    _used.clear()


def adore_score(z, positions, freq, w1, w2, out):
    return _call("adore_score", z.device, z, positions, freq, w1, w2, out)


def adore_release(slot_pos, slot_score, rebuild_score, score, insert, n):
    return _call("adore_release", score.device, slot_pos, slot_score, rebuild_score, score, insert, n)


def put_rows(k, v, slots, k_new, v_new):
    return _call("put_rows", k.device, k, v, slots, k_new, v_new)


def rope(x, positions, cos, sin, out=None):
    return _call("rope", x.device, x, positions, cos, sin, out=out)


def decode_attention(q, k, v, seq_lens, **kw):
    return _call("decode_attention", q.device, q, k, v, seq_lens, **kw)


def merge_partials(outputs, lses, out_dtype, return_lse=False):
    return _call("merge_partials", outputs[0].device, outputs, lses, out_dtype, return_lse=return_lse)


def rope_decode_attention(q, k, v, seq_lens, positions, cos, sin, **kw):
    return _call("rope_decode_attention", q.device, q, k, v, seq_lens, positions, cos, sin, **kw)


def positional_decode_attention(q, k, v, seq_lens, q_pos, k_pos, **kw):
    return _call("positional_decode_attention", q.device, q, k, v, seq_lens, q_pos, k_pos, **kw)


def decode_attention_with_logits(q, k, v, seq_lens=None, **kw):
    return _call("decode_attention_with_logits", q.device, q, k, v, seq_lens, **kw)


def accumulate_weights(logits, lse, acc, counts, heads_per_set, indices=None):
    return _call("accumulate_weights", logits.device, logits, lse, acc, counts, heads_per_set, indices)


def gathered_decode_attention(q, k, v, indices, counts, **kw):
    return _call("gathered_decode_attention", q.device, q, k, v, indices, counts, **kw)


def sparq_scores_and_group(q, k_t, i1, seq_lens, tau, **kw):
    return _call("sparq_scores_and_group", q.device, q, k_t, i1, seq_lens, tau, **kw)


def sparq_components(q, kv_heads, r):
    return _call("sparq_components", q.device, q, kv_heads, r)


def sparq_mix(y, s_hat, i2, v_sum, n):
    return _call("sparq_mix", y.device, y, s_hat, i2, v_sum, n)


def quest_page_scores(q, kmin, kmax, n_pages):
    return _call("quest_page_scores", q.device, q, kmin, kmax, n_pages)


def evict_insert(acc, slot_pos, k, v, k_new, v_new, pos, recent):
    return _call("evict_insert", acc.device, acc, slot_pos, k, v, k_new, v_new, pos, recent)


def quantize_kv(x):
    return _call("quantize_kv", x.device, x)


def dequantize_kv(xq, scale, zero, dtype=torch.float32):
    return _call("dequantize_kv", xq.device, xq, scale, zero).to(dtype)


def decode_attention_int8(q, kq, vq, k_scale, k_zero, v_scale, v_zero, seq_lens, **kw):
    return _call("decode_attention_int8", q.device, q, kq, vq, k_scale, k_zero, v_scale, v_zero,
                 seq_lens, **kw)


def gathered_decode_attention_int8(q, kq, vq, k_scale, k_zero, v_scale, v_zero, indices, counts, **kw):
    return _call("gathered_decode_attention_int8", q.device, q, kq, vq, k_scale, k_zero, v_scale,
                 v_zero, indices, counts, **kw)


def put_rows_int8(kq, vq, ks, kz, vs, vz, slot, k_new, v_new):
    return _call("put_rows_int8", kq.device, kq, vq, ks, kz, vs, vz, slot, k_new, v_new)


def gather_host_rows(host, dev, indices, boundary, out=None, count=None):
    return _call("gather_host_rows", indices.device, host, dev, indices, boundary, out=out, count=count)


def attention_with_probs(q, k, v, seq_lens, **kw):
    return _call("attention_with_probs", q.device, q, k, v, seq_lens, **kw)


def masked_attention(q, parts, **kw):
    return _call("masked_attention", q.device, q, parts, **kw)
