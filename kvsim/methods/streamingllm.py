"""StreamingLLM: attention sinks + a recent window (Xiao et al., ICLR'24, arXiv 2309.17453;
code mit-han-lab/streaming-llm).

The cache keeps the first ``sink`` tokens and the ``recent`` newest (``StartRecentKVCache`` in
streaming_llm/kv_cache.py). One decode step, per layer and KV head, context S (= ``wl.seq``, the
new token included), C = min(sink + recent, S − 1) cached past tokens:
  attention over C + 1 rows: read 2·(C+1)·d·b, FLOPs G·(C+1)·(4d+5)   (METHODS.md)
  re-rotation (RoPE models): keys are cached before RoPE and rotated to their position *in the
      cache* every step (pos_shift/modify_llama.py: ``apply_rotary_pos_emb_single(key_states,
      ..., arange(kv_seq_len))``), x·cos + rotate_half(x)·sin: 3 FLOPs per element, 3·C·d, and
      one more read of the C cached keys, C·d·b (METHODS.md). Decision: that read is charged on
      top of attention's, as its own op ``layers/attn/rerotate_k``. It sits between two real
      kernels: one that rotates keys as it loads them shares attention's read (≈ 0 extra
      bytes); the reference materializes the rotated keys (+C·d·b write, then attention reads
      the rotated copy), i.e. C·d·b more than charged here.
      The new key's own rotation stays in ``layers/attn/rope``. Models with learned absolute
      positions (OPT) need no re-rotation.
Eviction drops a slice (a ring buffer in a real kernel): no extra traffic beyond ``kv_append``.
GQA: the window is positional, identical for every head, so KV heads need nothing special.

Defaults: sink 4 and recent 2000 from examples/run_streaming_llama.py (``--start_size 4
--recent_size 2000``). The reference trims the cache to sink + recent after each token
(eval_long_ppl.py), so the next token attends to sink + recent + 1 rows, METHODS.md's C + 1.
A window of S or more is not an error: attention then equals dense (plus the re-rotation).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..cost import Op, Resident
from .attention import contiguous_target, decode_attention, full_kv_bytes
from .base import Method, require

ROTATE_FLOPS = 3.0  # x·cos + rotate_half(x)·sin per element


class StreamingLLM(Method):
    name = "streamingllm"
    paper = "Efficient Streaming Language Models with Attention Sinks (arXiv 2309.17453)"
    summary = "keep sink tokens + a recent window; keys re-rotated to cache positions each step"

    sink: int = Field(4, description="attention-sink tokens kept from the start (examples: 4)")
    recent: int = Field(2000, description="most recent tokens kept (examples: 2000)")

    @model_validator(mode="after")
    def _in_range(self):
        require(self.sink >= 0, f"streamingllm: sink must be >= 0 tokens, got {self.sink}")
        require(self.recent >= 0, f"streamingllm: recent must be >= 0 tokens, got {self.recent}")
        require(self.sink + self.recent >= 1, "streamingllm: sink + recent must keep at least 1 token")
        return self

    def cached_tokens(self, seq):
        """C: past tokens held per KV head."""
        return np.minimum(float(self.sink + self.recent), np.asarray(seq, dtype=float) - 1.0)

    def attention_ops(self, model, wl) -> list[Op]:
        cached = self.cached_tokens(wl.seq)
        ops = decode_attention("layers/attn/decode", model, wl, rows=cached + 1.0, layers=model.n_layers,
                               target=contiguous_target(wl))
        if model.learned_positions:
            return ops
        heads = wl.batch * model.n_kv_heads
        # per KV head: read C·d·b_kv pre-RoPE keys (+ int8 scale/zero per row), 3·C·d FLOPs
        key_row = model.head_dim * wl.b_kv + wl.kv_scale_bytes_per_row
        rotate = Op("layers/attn/rerotate_k", "attention",
                    flops=heads * cached * model.head_dim * ROTATE_FLOPS,
                    hbm_read=heads * cached * key_row, dtype=wl.compute_dtype).scaled(model.n_layers)
        return ops + [rotate]

    def kv_resident(self, model, wl) -> list[Resident]:
        rows = self.cached_tokens(wl.seq) + 1.0  # the window plus the new token's slot
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl, rows=rows), kv=True)]
