"""SparQ Attention (arXiv 2312.04985, Alg. 1; graphcore-research/llm-inference-research).

Cache: K and V [B,Hkv,S_max,d] plus a second, d-major copy of K [B,Hkv,d,S_max] so that step 2
reads r contiguous rows of S (+S·d·b memory per KV head), and the fp32 running sum of V for v̄
(arXiv 2312.04985 §3, step 6). Per KV head and layer a step reads S·r·b (approximate scores) + 2·k·d·b
(gathered rows) + 4·d (v̄); the scores stay fp32: G·S·4 written, normalised in place, and their
group sum S·4 (last ``local`` forced to +inf) written in the same pass and read by the top-k.
Under GQA the group shares i1 (|q| summed over its G heads) and i2 (ŝ summed over the group).
Step 1 (i1 and τ), and α with the mix (steps 4, 6), are one kernel each (kvsim/methods/sparq/kernels_steps.py).
"""
from __future__ import annotations

import torch

from kvsim.runtime import ops
from kvsim.runtime.cache import num_splits
from kvsim.runtime.method import RuntimeMethod

from .spec import SparQSpec

ALIGN = 64  # k_t's S_max is padded to this many positions (128 bytes of bf16)


class SparQ(RuntimeMethod):
    spec_class = SparQSpec

    def check(self) -> None:
        super().check()
        r, k, local = self.p["r"], self.p["k"], self.p["local"]
        if not 1 <= r <= self.spec.head_dim:
            raise ValueError(f"sparq: r must be 1..{self.spec.head_dim}, got {r}")
        if k < 1 or not 0 <= local <= k:
            raise ValueError(f"sparq: need k >= 1 and 0 <= local <= k, got k={k}, local={local}")

    def allocate(self) -> None:
        super().allocate()
        s = self.spec
        cols = -(-s.max_seq // ALIGN) * ALIGN  # rows of k_t 16-byte aligned: vector loads in step 2
        self.k_t = [torch.zeros(s.batch, s.n_kv_heads, s.head_dim, cols, dtype=s.dtype, device=s.device)
                    for _ in range(s.n_layers)]
        self.v_sum = [torch.zeros(s.batch, s.n_kv_heads, s.head_dim, dtype=torch.float32, device=s.device)
                      for _ in range(s.n_layers)]

    def side_tensors(self):
        return self.k_t + self.v_sum

    def store_prefill(self, layer, k, v):
        super().store_prefill(layer, k, v)
        self.k_t[layer][..., : k.shape[2]] = k.transpose(-1, -2)
        self.v_sum[layer] = v.float().sum(2)

    def store_row(self, layer, pos, k, v):
        super().store_row(layer, pos, k, v)
        self.k_t[layer][..., pos] = k  # write d·b, strided by S_max
        self.v_sum[layer] += v.float()

    def read(self, layer, q):
        q = self.rotary(q, self.n)
        n = self.n + 1
        B = q.shape[0]
        Hkv = self.spec.n_kv_heads
        i1, tau = ops.sparq_components(q, Hkv, self.p["r"])  # step 1: i1 [B,Hkv,r], tau [B,H]
        k, local = min(self.p["k"], n), min(self.p["local"], self.p["k"], n)
        s_hat, group = ops.sparq_scores_and_group(q, self.k_t[layer], i1, self.kv.seq_lens(n), tau,  # step 2
                                                  local=local, num_splits=num_splits(B, Hkv, n))
        # step 3: `local` forced in (+inf), positions from n on never picked (−inf); the whole
        # contiguous row, so torch.topk makes no copy of a strided slice
        i2 = group.topk(k, dim=-1, sorted=False).indices.int()
        y = self.kv.attend_indices(layer, q, i2, self.kv.seq_lens(k)[:, None].expand(B, Hkv))  # step 5
        return ops.sparq_mix(y, s_hat, i2, self.v_sum[layer], n)  # steps 4 and 6: α, α·y + (1 − α)·v̄
