"""Quest: query-aware page selection (arXiv 2406.10774 §3; mit-han-lab/Quest).

Pages of P tokens keep an element-wise min and max key, kmin/kmax [B,Hkv,P_max,d] (extra memory
KV/P), updated as tokens append. Per query head: page score Σ_i max(q_i·M_i, q_i·m_i), the top
(budget/P − 1) earlier pages plus the current page, attention over their tokens (Hsel = H).
Layers 0-1 stay dense (paper §4.1), and so does every layer while the budget covers the cache
(quest/utils/controller.py ``need_estimate``). Bytes per head: 2·(S/P)·d·b metadata + 2·budget·d·b.
"""
from __future__ import annotations

import math

import torch

from kvsim.runtime import ops
from kvsim.runtime.method import RuntimeMethod

from .spec import DENSE_LAYERS, QuestSpec


class Quest(RuntimeMethod):
    spec_class = QuestSpec

    def allocate(self) -> None:
        super().allocate()
        s, P = self.spec, self.p["page_size"]
        pages = math.ceil(s.max_seq / P)
        shape = (s.batch, s.n_kv_heads, pages, s.head_dim)
        self.kmin = [torch.zeros(shape, dtype=s.dtype, device=s.device) if layer >= DENSE_LAYERS else None
                     for layer in range(s.n_layers)]
        self.kmax = [torch.zeros_like(t) if t is not None else None for t in self.kmin]

    def side_tensors(self):
        return [t for t in self.kmin + self.kmax if t is not None]

    def store_prefill(self, layer, k, v):
        super().store_prefill(layer, k, v)
        if self.kmin[layer] is None:
            return
        B, Hkv, n, d = k.shape
        P = self.p["page_size"]
        pages = math.ceil(n / P)
        pad = pages * P - n
        lo = torch.nn.functional.pad(k.float(), (0, 0, 0, pad), value=float("inf")).reshape(B, Hkv, pages, P, d)
        hi = torch.nn.functional.pad(k.float(), (0, 0, 0, pad), value=float("-inf")).reshape(B, Hkv, pages, P, d)
        self.kmin[layer][:, :, :pages] = lo.amin(3).to(k.dtype)
        self.kmax[layer][:, :, :pages] = hi.amax(3).to(k.dtype)

    def store_row(self, layer, pos, k, v):
        super().store_row(layer, pos, k, v)
        if self.kmin[layer] is None:
            return
        page, first = divmod(pos, self.p["page_size"])
        lo, hi = self.kmin[layer][:, :, page], self.kmax[layer][:, :, page]
        lo.copy_(k if first == 0 else torch.minimum(lo, k))  # read and write 2·d·b
        hi.copy_(k if first == 0 else torch.maximum(hi, k))

    def reads_every_row(self, layer):
        return self.kmin[layer] is None or self.n + 1 <= self.p["budget"]

    def read(self, layer, q):
        self.prefetch_blocks(layer)  # offloaded: dense layers' blocks on the copy stream
        q = self.rotary(q, self.n)
        n = self.n + 1
        if self.reads_every_row(layer):
            return self.kv.attend_all(layer, q, n)  # budget covers the cache: no estimation
        P = self.p["page_size"]
        n_pages = math.ceil(n / P)
        current = n_pages - 1
        # [B,H,P_max]: the full pages scored, −inf from the current page on, so the top-k takes
        # each whole contiguous row (no copy of a strided slice) and never picks the current page
        scores = ops.quest_page_scores(q, self.kmin[layer], self.kmax[layer], self.kv.seq_lens(current))
        k_pages = min(max(self.p["budget"] // P, 1) - 1, current)
        top = scores.topk(k_pages, dim=-1, sorted=False).indices  # [B,H,k_pages], any order
        pages = torch.cat([top, torch.full_like(top[..., :1], current)], -1).int()  # current page last
        B, H = pages.shape[:2]
        counts = self.kv.seq_lens(k_pages * P + n - current * P)[:, None].expand(B, H)  # rows, cached
        return self.kv.attend_indices(layer, q, pages, counts, page_size=P)  # pages read in place
