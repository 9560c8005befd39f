"""DuoAttention: retrieval heads keep the full cache, streaming heads a sink + recent window
(arXiv 2410.10819 §3; mit-han-lab/duo-attention).

Head split: the identification is offline (gates per head), so the runtime takes the ratio and
makes a deterministic choice: the first ⌈ρ·Hkv⌉ KV heads of every layer retrieve
(``retrieval_mask`` [layers, Hkv]); their G query heads each are contiguous.
Cache: retrieval heads [B, Hr, S_max, d]; streaming heads compressed to [B, Hkv−Hr, L+1, d]
(a ring, runtime/cache.py SinkRing). Bytes per layer: Σ_retrieval 2·S·d·b + Σ_streaming
2·(L+1)·d·b, L = sink + recent past tokens plus the current one.
"""
from __future__ import annotations

import math

import torch

from kvsim.runtime.cache import KVCache, SinkRing
from kvsim.runtime.method import RuntimeMethod

from .spec import DuoAttentionSpec


class DuoAttention(RuntimeMethod):
    spec_class = DuoAttentionSpec

    def allocate(self) -> None:
        s = self.spec
        self.n_retrieval = min(s.n_kv_heads, math.ceil(self.p["retrieval_ratio"] * s.n_kv_heads - 1e-9))
        self.ring = SinkRing(self.p["sink"], self.p["recent"], self.spec.max_seq)
        n_stream = s.n_kv_heads - self.n_retrieval
        self.full = KVCache(s.with_(n_kv_heads=self.n_retrieval)) if self.n_retrieval else None
        self.stream = KVCache(s.with_(n_kv_heads=n_stream), rows=self.ring.rows) if n_stream else None
        self.q_split = self.n_retrieval * s.group  # query heads [0, q_split) retrieve

    @property
    def retrieval_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.spec.n_layers, self.spec.n_kv_heads, dtype=torch.bool)
        mask[:, : self.n_retrieval] = True
        return mask

    @property
    def device_bytes(self) -> int:
        return sum(c.device_bytes for c in (self.full, self.stream) if c is not None)

    @property
    def host_bytes(self) -> int:
        return 0

    def store_prefill(self, layer, k, v):
        r = self.n_retrieval
        if self.full:
            self.full.load(layer, k[:, :r], v[:, :r])
        if self.stream:
            keep = self.ring.prefill_positions(k.shape[2])
            slots = torch.tensor([self.ring.slot(p) for p in keep], device=k.device, dtype=torch.long)
            pos = torch.tensor(keep, device=k.device, dtype=torch.long)
            self.stream.load(layer, k[:, r:, pos], v[:, r:, pos], slots=slots)

    def store_row(self, layer, pos, k, v):
        r = self.n_retrieval
        if self.full:
            self.full.put(layer, pos, k[:, :r], v[:, :r])
        if self.stream:
            self.stream.put(layer, self.ring.slot(pos), k[:, r:], v[:, r:])

    def read(self, layer, q):
        q = self.rotary(q, self.n)
        n = self.n + 1
        parts = []
        if self.full:
            parts.append(self.full.attend_all(layer, q[:, : self.q_split].contiguous(), n))
        if self.stream:
            parts.append(self.stream.attend_all(layer, q[:, self.q_split:].contiguous(), self.ring.count(n)))
        return torch.cat(parts, dim=1)
