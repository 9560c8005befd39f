"""DuoAttention (Xiao et al., arXiv 2410.10819): each (layer, KV head) is a retrieval head, which
keeps the full KV cache, or a streaming head, which keeps only ``sink`` first and ``recent`` last
tokens (L = sink + recent). Code: mit-han-lab/duo-attention.

Which heads retrieve is found offline (a gate per head, distillation + L1); kvsim takes the split
as the fraction ρ of KV heads that retrieve, averaged over layers (a per-layer count need not be
whole).

Defaults:
  retrieval_ratio: 25% for MHA models, 50% for GQA models, the paper's deployment settings
    (Llama-2-7B-32K and Llama-3-8B); None picks by ``model.group``.
  sink = 64, recent = 256: the evaluation setting (``--sink_size 64 --recent_size 256`` in
    scripts/longbench.sh); the training config uses 128/256.

Decode, per layer (b KV bytes): retrieval heads read 2·S·d·b per KV head, streaming heads
2·(L+1)·d·b (the window and the new token; S if S ≤ L+1). KV memory ρ·full + (1−ρ)·min(L, S) rows.
The new token's K/V is written once per head: kvsim assumes an in-place ring slot for streaming
heads; the reference static cache (duo_attn/patch/static_kv_cache.py
``compress_and_replace_streaming_kv``) instead concatenates and re-copies the whole window every
step, ~4·L·d·b more per streaming head, which is not modelled.

Prefill (``prefill_cost``): chunked in 32k-token chunks (``--prefilling_chunk_size 32000`` in
scripts/efficiency.sh, the paper's efficiency runs) and the streaming KV compressed to L after
each chunk. Retrieval heads: full causal attention, T·(T+1)/2 (query, key) pairs. Streaming heads:
chunk c of n_c tokens sees min(L, c·C) compressed tokens + its own causal part,
n_c·past_c + n_c·(n_c+1)/2 pairs. FLOPs 4·d + 5 per pair and query head (q·k, p·v, softmax).
Bytes: q, k, v read and o written once; each chunk re-reads the cache it attends to (retrieval:
all earlier tokens; streaming: L rows) and the compression copies L rows per streaming head.
The projections and MLP are counted once over all T tokens; re-reading the weights once per
chunk (⌈T/C⌉ − 1 extra weight reads, under 1% of a compute-bound prefill) is not modelled.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...cost import Cost, Op, Resident
from ...decoder import layer_ops, model_ops
from ...models import ModelConfig
from ...workload import Workload
from ..attention import contiguous_target, decode_attention, full_kv_bytes, kv_append, kv_row_bytes, query_rope, small_kernels
from ..base import Method
from .spec import PREFILL_CHUNK, DuoAttentionSpec


class DuoAttention(DuoAttentionSpec, Method):
    def _split(self, model: ModelConfig) -> tuple[float, float]:
        rho = self.ratio(model)
        return rho * model.n_kv_heads, (1.0 - rho) * model.n_kv_heads

    def attention_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        retrieval, streaming = self._split(model)
        L, ops = model.n_layers, []
        if retrieval > 0:  # 2·S·d·b per retrieval KV head
            ops += decode_attention("layers/attn/retrieval", model, wl, rows=wl.seq, layers=L,
                                    kv_heads=retrieval, target=contiguous_target(wl))
        if streaming > 0:  # 2·(L+1)·d·b per streaming KV head
            # each part is a contiguous cache: the dense kernel's split policy (runtime attend_all)
            ops += decode_attention("layers/attn/streaming", model, wl, layers=L, kv_heads=streaming,
                                    rows=np.minimum(self.window + 1.0, wl.seq), target=contiguous_target(wl))
        # host: each part's query heads sliced (a copy when both parts exist), the outputs
        # joined (a cat)
        parts = (retrieval > 0) + (streaming > 0)
        copies = 2.0 if parts == 2 else 0.0
        return ops + [small_kernels("layers/attn/join_heads", copies + 1.0, L, torch_host=parts)]

    def cache_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        """The new K and V go to the retrieval heads' cache and the streaming heads' ring: two
        torch calls and two views per part."""
        retrieval, streaming = self._split(model)
        parts = (retrieval > 0) + (streaming > 0)
        append = kv_append(model, wl)
        return [replace(append, launches=parts * append.launches, torch_calls=2.0 * parts * model.n_layers,
                        torch_host_calls=(4.0 + 2 * parts) * model.n_layers)]

    def kv_resident(self, model: ModelConfig, wl: Workload) -> list[Resident]:
        retrieval, streaming = self._split(model)
        held = np.minimum(float(self.window), wl.seq)
        return [Resident("kv_retrieval", gpu=full_kv_bytes(model, wl, kv_heads=retrieval), kv=True),
                Resident("kv_streaming", gpu=full_kv_bytes(model, wl, rows=held, kv_heads=streaming), kv=True)]

    # ---- prefill ------------------------------------------------------------------------------
    def stream_pairs(self, T) -> np.ndarray:
        """(query, key) pairs of one streaming head over a T-token chunked prefill."""
        C, W = float(PREFILL_CHUNK), float(self.window)
        full = np.floor(T / C)  # whole chunks
        rem = T - full * C  # tokens of the last, partial chunk
        pairs = full * C * (C + 1) / 2 + np.maximum(full - 1, 0) * C * W  # chunk 0 sees no past
        return pairs + rem * (rem + 1) / 2 + rem * W * (full >= 1)

    def retrieval_past_rows(self, T) -> np.ndarray:
        """Earlier tokens each chunk re-reads, summed over chunks: Σ_c c·C."""
        C = float(PREFILL_CHUNK)
        full = np.floor(T / C)
        rem = T - full * C
        return C * full * (full - 1) / 2 + (rem > 0) * full * C

    def _prefill_attention(self, model: ModelConfig, wl: Workload) -> Op:
        T, B, G, d = wl.seq, wl.batch, model.group, model.head_dim
        retrieval, streaming = self._split(model)
        chunks = np.ceil(T / PREFILL_CHUNK)
        pairs = retrieval * T * (T + 1) / 2 + streaming * self.stream_pairs(T)
        row = kv_row_bytes(model, wl)
        # read q, k, v once + past cache per chunk (retrieval Σ c·C rows, streaming L rows per
        # later chunk) ; write o + the compressed window copy (read and write L rows)
        copies = streaming * np.maximum(chunks - 1, 0) * self.window * row
        past = (retrieval * self.retrieval_past_rows(T) + streaming * np.maximum(chunks - 1, 0) * self.window) * row
        rows = B * T
        return Op("layers/attn/prefill", "attention", flops=B * G * pairs * (4 * d + 5),
                  hbm_read=rows * (model.q_dim + 2 * model.kv_dim) * wl.b_a + B * (past + copies),
                  hbm_write=rows * model.q_dim * wl.b_a + B * copies,
                  launches=2 * chunks, dtype=wl.compute_dtype).scaled(model.n_layers)

    def prefill_cost(self, model, hw, wl) -> Cost:
        """Chunked prefill with streaming heads compressed after each chunk (see module doc)."""
        self.check(model, wl)
        T = wl.seq
        head, *tail = model_ops(model, wl, tokens=T, logits_tokens=1.0)
        ops = [head, *layer_ops(model, wl, tokens=T), kv_append(model, wl, tokens=T),
               *query_rope(model, wl, tokens=T), self._prefill_attention(model, wl), *tail]
        resident = self.base_resident(model, hw, wl) + self.kv_resident(model, wl)
        return Cost(tuple(ops), tuple(resident))
