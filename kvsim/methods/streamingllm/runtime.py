"""StreamingLLM: attention sinks + a recent window (arXiv 2309.17453 §3.2; mit-han-lab/streaming-llm).

Keys are cached before RoPE and re-rotated every step by their position inside the cache
(``enable_pos_shift``): sinks at 0..sink−1, the recent tokens after them in order, the query at
the last cache position. Cache [B, Hkv, sink+recent+1, d] as a ring (runtime/cache.py SinkRing):
C = sink + recent past tokens and the current one at attention time. Per KV head a step's
attention reads the C+1 pre-RoPE keys and their values, 2·(C+1)·d·b, and rotates each key as it
loads it (~3·d FLOPs a row; kernels/decode.py rope_decode_attention): the rotated keys are never
written.
"""
from __future__ import annotations

import torch

from kvsim.runtime import ops
from kvsim.runtime.cache import KVCache, SinkRing, num_splits
from kvsim.runtime.method import RuntimeMethod

from .spec import StreamingLLMSpec


class StreamingLLM(RuntimeMethod):
    spec_class = StreamingLLMSpec

    def allocate(self) -> None:
        self.ring = SinkRing(self.p["sink"], self.p["recent"], self.spec.max_seq)
        self.kv = KVCache(self.spec, rows=self.ring.rows)
        # absolute position held by each slot (same for every sequence, head and layer); −1 empty
        self.slot_pos = torch.full((self.kv.rows,), -1, dtype=torch.long, device=self.spec.device)

    def side_tensors(self):
        return [self.slot_pos]

    def prefill(self, layer, k_raw, v):
        keep = self.ring.prefill_positions(k_raw.shape[2])
        pos = torch.tensor(keep, dtype=torch.long, device=k_raw.device)
        slots = torch.tensor([self.ring.slot(p) for p in keep], dtype=torch.long, device=k_raw.device)
        self.kv.load(layer, k_raw[:, :, pos], v[:, :, pos], slots=slots)  # pre-RoPE keys
        if layer == 0:
            self.slot_pos[slots] = pos

    def begin_step(self, tokens):
        if tokens is not None:  # attention-only steps write nothing
            self.slot_pos[self.ring.slot(self.n)].fill_(self.n)  # a fill kernel, no host copy (graph-capturable)
        key_pos, self.q_pos = self.cache_positions(self.n + 1)  # shared by every layer
        self.key_pos = key_pos.int()

    def write(self, layer, k, v):
        self.kv.put(layer, self.ring.slot(self.n), k, v)  # pre-RoPE

    def cache_positions(self, n_with_current: int):
        """Rotary position of every slot, and of the query (the last one)."""
        sink = self.ring.sink
        start = self.ring.oldest_recent(n_with_current)
        rel = torch.where(self.slot_pos < sink, self.slot_pos, sink + self.slot_pos - start)
        return rel.clamp(min=0), self.ring.count(n_with_current) - 1

    def read(self, layer, q):
        q = self.rotary(q, self.q_pos)
        rows = self.ring.count(self.n + 1)
        B, Hkv = self.spec.batch, self.spec.n_kv_heads
        splits = num_splits(B, Hkv, rows, dense=True)
        k, v, lens = self.kv.keys(layer), self.kv.values(layer), self.kv.seq_lens(rows)
        if not self.rotary.enabled:  # learned positions (OPT): nothing to re-rotate
            return ops.decode_attention(q, k, v, lens, num_splits=splits)
        half = self.spec.head_dim // 2  # Rotary keeps cos twice and −sin | +sin: take one half each
        return ops.rope_decode_attention(q, k, v, lens, self.key_pos, self.rotary.cos[:, :half],
                                         self.rotary.sin[:, half:], num_splits=splits)
