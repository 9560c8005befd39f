"""ALISA Sparse Window Attention (arXiv 2403.17312 §4.2, ISCA'24; no public code).

Caching ratio r = 1 − sparsity. With n tokens (current included), k = round(n·r/2) (half up):
the local set is the last k positions, the global set the top-k earlier tokens by accumulated
attention, summed over all heads (one set per layer and sequence). Attention is eager over the
2k gathered rows, read in place through the index list (per KV head 4·k·d·b + 2k·4 B), writes
its logits (H·2k·4 B, kernels/scores.py); one more pass adds the weights summed over all heads
into the layer's score vector acc [B, S_max] fp32 at the selected positions (read n·4 B for
the top-k). INT8 rows are read in place and dequantized inside the kernel (kernels/int8_probs.py:
per row 2·d + 8 B for K, V and their scale and zero point, + 4 B of index).
UNVERIFIED: the paper accumulates over the last k steps; keeping k past score vectors costs
k·S·4 B per layer, so scores here accumulate over all steps (as H2O does).
kv_bits = 8: INT8 cache, per-row fp16 scale and zero (§5). With ``offload`` (Phase II, §4.3) the
oldest fraction of the KV lives in pinned host memory and selected rows cross PCIe; Phase III
(delete and recompute) is not run (kvsim.schedule plans it).
"""
from __future__ import annotations

import math

import torch

from kvsim.runtime import ops
from kvsim.runtime.method import RuntimeMethod
from kvsim.runtime.synthetic import synthetic_scores

from .spec import ALISASpec


class ALISA(RuntimeMethod):
    spec_class = ALISASpec

    def __init__(self, spec, params, rotary, counter=None):
        if params["kv_bits"] not in (8, 16):
            raise ValueError(f"alisa: kv_bits must be 8 or 16, got {params['kv_bits']}")
        if params["kv_bits"] == 8:
            spec = spec.with_(kv_dtype="int8")
        super().__init__(spec, params, rotary, counter)

    def allocate(self) -> None:
        super().allocate()
        s = self.spec
        self.acc = [torch.zeros(s.batch, s.max_seq, dtype=torch.float32, device=s.device)
                    for _ in range(s.n_layers)]

    def side_tensors(self):
        return self.acc

    def store_prefill(self, layer, k, v):
        super().store_prefill(layer, k, v)
        self.acc[layer][:, : k.shape[2]] = synthetic_scores(k, self.spec.group, seed=layer, sum_heads=True)

    def window(self, n: int) -> int:
        return min(n, max(1, math.floor(n * (1.0 - self.p["sparsity"]) / 2 + 0.5)))

    def select(self, layer: int, n: int) -> torch.Tensor:
        """Global ∪ local token indices [B, K] (K = 2k, or n when 2k > n)."""
        k = self.window(n)
        B, dev = self.spec.batch, self.spec.device
        local = torch.arange(n - k, n, device=dev).expand(B, k)
        earlier = self.acc[layer][:, : n - k]
        top = earlier.topk(min(k, n - k), dim=-1, sorted=False).indices  # order is free: no sort pass
        return torch.cat([top, local], -1)

    def read(self, layer, q):
        q = self.rotary(q, self.n)
        n = self.n + 1
        idx = self.select(layer, n)
        B, K = idx.shape
        Hkv = self.spec.n_kv_heads
        rows = idx[:, None, :].expand(B, Hkv, K).int()  # one list per layer, shared by the KV heads
        counts = self.kv.seq_lens(K)[:, None].expand(B, Hkv)
        o, lse, logits = self.kv.attend_indices(layer, q, rows, counts, logits=True)
        ops.accumulate_weights(logits, lse, self.acc[layer], self.kv.seq_lens(K),
                               self.spec.n_heads, indices=idx.int())  # acc[idx] += Σ_heads weights
        return o
