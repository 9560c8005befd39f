"""H2O: heavy hitters + recent tokens (arXiv 2306.14048 §4; FMInference/H2O).

Per (sequence, KV head) a compact cache of C = heavy + recent past tokens plus the current one,
[B, Hkv, C+1, d], with each slot's position and its accumulated attention (fp32, summed over the
G query heads of the group, as kvsim's cost model does under GQA). Once full, the new token
overwrites, in place, the slot with the least accumulated attention among the heavy + 1 tokens
older than the last ``recent`` (= keeping the top-heavy, ``_update_hh_score`` + topk in
h2o_hf/utils_real_drop/modify_llama.py; one launch, kvsim/methods/h2o/kernels.py: read the C scores and
positions, write 2·d·b; the reference re-gathers the cache).
Attention writes its logits (G·(C+1)·4 B per KV head, kernels/scores.py) and one more pass
adds the weights exp(logit − lse), summed over the group, into acc (read them, read and write
the C+1 scores). Prefill: scores from one synthetic query per head over the prompt, the
last ``recent`` tokens kept plus the ``heavy`` highest-scored earlier ones.
"""
from __future__ import annotations

import torch

from kvsim.runtime import ops
from kvsim.runtime.cache import KVCache
from kvsim.runtime.method import RuntimeMethod
from kvsim.runtime.synthetic import synthetic_scores

from .spec import H2OSpec


class H2O(RuntimeMethod):
    spec_class = H2OSpec

    def allocate(self) -> None:
        s = self.spec
        self.cap = min(self.p["heavy"] + self.p["recent"] + 1, s.max_seq)  # rows ever used
        self.kv = KVCache(s, rows=self.cap)
        shape = (s.batch, s.n_kv_heads, self.cap)
        self.slot_pos = [torch.full(shape, -1, dtype=torch.long, device=s.device) for _ in range(s.n_layers)]
        self.acc = [torch.zeros(shape, dtype=torch.float32, device=s.device) for _ in range(s.n_layers)]
        self.count = 0

    def side_tensors(self):
        return self.slot_pos + self.acc

    def store_prefill(self, layer, k, v):
        B, Hkv, n, _ = k.shape
        scores = synthetic_scores(k, self.spec.group, seed=layer)
        recent = torch.arange(max(0, n - self.p["recent"]), n, device=k.device).expand(B, Hkv, -1)
        older = scores[..., : max(0, n - self.p["recent"])]
        heavy = older.topk(min(self.p["heavy"], older.shape[-1]), dim=-1).indices
        keep = torch.cat([heavy, recent], -1)  # [B,Hkv,count]
        self.kv.load(layer, *(t.gather(2, keep[..., None].expand(-1, -1, -1, t.shape[-1])) for t in (k, v)))
        self.slot_pos[layer][..., : keep.shape[-1]] = keep
        self.acc[layer][..., : keep.shape[-1]] = scores.gather(-1, keep)
        self.count = keep.shape[-1]

    def store_row(self, layer, pos, k, v):
        if self.count == self.cap:  # full: the least-scored slot outside the last `recent` positions
            dtype = self.spec.dtype
            ops.evict_insert(self.acc[layer], self.slot_pos[layer], self.kv.keys(layer),
                             self.kv.values(layer), k.to(dtype), v.to(dtype), pos, self.p["recent"])
            return
        self.kv.put(layer, self.count, k, v)
        self.slot_pos[layer][..., self.count] = pos
        self.acc[layer][..., self.count] = 0.0

    def read(self, layer, q):
        q = self.rotary(q, self.n)
        rows = min(self.count + 1, self.cap)
        o, lse, logits = self.kv.attend_all(layer, q, rows, logits=True)
        ops.accumulate_weights(logits[..., : self.cap], lse, self.acc[layer], self.kv.seq_lens(rows),
                               self.spec.group)  # acc += weights summed over each group
        return o

    def end_step(self) -> None:
        super().end_step()
        self.count = min(self.count + 1, self.cap)
