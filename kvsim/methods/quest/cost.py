"""Quest (Tang et al., arXiv 2406.10774, ICML'24): query-aware page selection. The cache is cut into
pages of P tokens, each with the element-wise min and max of its keys; a query scores every page by
Σ_i max(q_i·M_i, q_i·m_i), keeps the best pages and attends to their tokens only.
Code: mit-han-lab/Quest.

Defaults:
  page_size = 16: ``--page_size`` default of scripts/bench_textgen.py and ``--chunk_size 16`` in
    scripts/longbench.sh; the paper's setting.
  budget = 4096 tokens: the largest budget of the LongBench sweep in scripts/longbench.sh
    (512..4096), where the paper reports accuracy close to full attention. The kernel benchmark
    (scripts/bench_textgen.py) defaults to 256, a speed setting; pass budget=256 for it.
Layers 0–1 always attend densely (evaluation/quest_attention.py: ``layer_id < 2``; the efficient
model skips them through the page budget). When the budget covers the cache (S ≤ B) Quest skips
estimation and attends densely (quest/utils/controller.py ``need_estimate``), so the cost is dense
plus the metadata upkeep.

Per KV head and sparse layer (G query heads, b KV bytes, b_a activation bytes):
  estimate  read 2·⌈S/P⌉·d·b min/max metadata + G·d·b_a (q) ; write G·⌈S/P⌉·4 fp32 page scores ;
            FLOPs G·⌈S/P⌉·4·d (two products, a max and an add per dimension)
  top-k     per query head over the ⌈S/P⌉ − 1 full pages, picking B/P − 1 (quest/ops topk,
            ``inference_page_budget - 1``: the last page is always attended)
  attention B tokens (B/P − 1 chosen pages + the current page): 2·B·d·b + one int32 page index
            per page (4/P per row); ratio to dense ≈ 1/P + B/S
Per step and layer, all layers: the current page's min/max is updated with the new key: read
d·b (key) + 2·d·b (min/max) ; write 2·d·b. Memory: +2·⌈S/P⌉·d·b per KV head and layer (KV/P).

GQA: Quest's kernels are MHA-only (one page table per head: ``kv_indices_without_last.repeat(
num_heads, 1)``), and its selection is per head. kvsim keeps per-query-head scoring and
selection, and shares what a grouped kernel can share: the metadata of a KV head is read once for
its G query heads (as K is in grouped decode), and the HBM bytes of attention are the union of
the G page sets, up to min(G·B, S) tokens (worst case: no overlap). The attention itself runs per
query head, as the runtime's kernel does: G·B rows loaded per KV head, the repeats served by L2
at the profile's measured re-read rate (``memory.reread_Bps``): where the G sets overlap (S near
the budget) that, not HBM, bounds the time.
"""
from __future__ import annotations

from dataclasses import replace

from typing import ClassVar

import numpy as np

from ...cost import Op, Resident
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES, TARGET_PROGRAMS
from ...models import ModelConfig
from ...offload import uniform_share
from ...workload import Workload
from ..attention import (contiguous_target, decode_attention, full_kv_bytes, kv_append, kv_row_bytes, small_kernels,
                         topk_op)
from ..base import Method, prompt_layer_bytes
from .spec import DENSE_LAYERS, QuestSpec


class Quest(QuestSpec, Method):
    prefetches_blocks: ClassVar[bool] = True  # offloaded: the dense layers' blocks come on the copy stream (kvsim.offload)
    def attention_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        S, B, P, L = wl.seq, float(self.budget), self.page_size, model.n_layers
        dense_layers = min(DENSE_LAYERS, L)
        sparse_layers = L - dense_layers
        sparse = S > B  # Quest estimates only when the pages outnumber the page budget
        union = np.where(sparse, np.minimum(model.group * B, S), S)
        ops = decode_attention("layers/attn/dense", model, wl, rows=S, layers=dense_layers,
                               target=contiguous_target(wl))
        pages, pages_combine = decode_attention("layers/attn/quest_pages", model, wl, rows=union,
                                                layers=sparse_layers,
                                                index_bytes=np.where(sparse, INDEX_BYTES / P, 0.0),
                                                target=np.where(sparse, TARGET_PROGRAMS, contiguous_target(wl)))
        # each query head's program loads its own B rows: G·B per KV head, the rows its group
        # shares served again by L2 (the HBM bytes stay the union)
        loaded = np.where(sparse, wl.batch * model.n_heads * B * (kv_row_bytes(model, wl) + INDEX_BYTES / P)
                          * sparse_layers, 0.0)
        ops += [replace(pages, loaded_bytes=loaded), pages_combine]
        on = np.where(sparse, 1.0, 0.0)
        heads = wl.batch * model.n_kv_heads
        topk = topk_op("layers/attn/quest_topk", np.maximum(self.pages(wl) - 1, 1), B / P - 1,
                       heads * model.group, sparse_layers, wl)
        # then the current page's index (a fill), the list (a cat) and its int32 cast: three
        # kernels a layer, and the row counts once a step; host: two views a layer
        glue = small_kernels("layers/attn/quest_lists", 3.0, sparse_layers, torch_host=3.0)
        counts = small_kernels("quest/row_counts", 1.0, 1)
        return ops + [self._estimate(model, wl, heads).scaled(sparse_layers * on), topk.scaled(on),
                      glue.scaled(on), counts.scaled(on)]

    def _estimate(self, model: ModelConfig, wl: Workload, heads) -> Op:
        # read 2·⌈S/P⌉·d·b + G·d·b_a ; write G·⌈S/P⌉·4 (fp32 scores, kernels.py here) ; FLOPs G·⌈S/P⌉·4·d
        G, d, n = model.group, model.head_dim, self.pages(wl)
        return Op("layers/attn/quest_estimate", "attention", flops=heads * G * n * 4 * d,
                  hbm_read=heads * (2 * n * d * wl.b_kv + G * d * wl.b_a),
                  hbm_write=heads * G * n * SCORE_BYTES, dtype=wl.compute_dtype).issued(triton=1, args=17, torch_host=1)

    def host_rows_read(self, model, wl, host):
        """Offloaded (kvsim.offload): dense layers (and all layers while S ≤ budget) read every
        host row per KV head as one block; sparse layers gather, per query head, the B/P − 1
        chosen pages of the full pages before the current one, taken as spread evenly (the
        current page is newest). Returns (block rows, gathered rows)."""
        L, P = model.n_layers, self.page_size
        dense_layers = min(DENSE_LAYERS, L)
        earlier = np.maximum(self.pages(wl) - 1.0, 1.0) * P
        chosen = uniform_share((self.budget // P - 1) * P, earlier, host)
        sparse = wl.seq > self.budget
        block = (dense_layers + np.where(sparse, 0, L - dense_layers)) * model.n_kv_heads * host
        return block, np.where(sparse, (L - dense_layers) * model.n_heads * chosen, 0.0)

    def cache_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        # current page's min/max: read d·b + 2·d·b ; write 2·d·b ; 2·d compares, every layer
        d, heads = model.head_dim, wl.batch * model.n_kv_heads
        # a min, a max and two copies (a page's first row: the two copies), in the layers
        # past the dense ones; host: the page's two views
        P = self.page_size
        calls = 4.0 * (P - 1) / P + 2.0 / P
        meta = Op("layers/attn/quest_metadata", "cache", flops=heads * 2 * d,
                  hbm_read=heads * 3 * d * wl.b_kv, hbm_write=heads * 2 * d * wl.b_kv, launches=calls,
                  dtype="fp32").issued(torch=calls, torch_host=2)
        return [kv_append(model, wl), meta.scaled(model.n_layers - min(DENSE_LAYERS, model.n_layers))]

    def prefill_scratch(self, model: ModelConfig, wl: Workload):
        """Beside the shared prompt keys and values: the pages' min and max taken over fp32
        copies of the rotated keys, one padded copy kept while the other is built from a
        cast and a padded copy: 3 · B·Hkv·S·d·4 bytes (layers past the dense ones)."""
        shared = super().prefill_scratch(model, wl)
        if model.n_layers <= DENSE_LAYERS:
            return shared
        return shared + 3 * prompt_layer_bytes(model, wl) * 4 / wl.b_a

    def kv_resident(self, model: ModelConfig, wl: Workload) -> list[Resident]:
        # 2·⌈S/P⌉·d·b per KV head and layer (min and max key of each page)
        meta = model.n_layers * wl.batch * model.n_kv_heads * self.pages(wl) * 2 * model.head_dim * wl.b_kv
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl), kv=True),
                Resident("quest_page_minmax", gpu=meta, kv=True)]
