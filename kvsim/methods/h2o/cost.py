"""H2O, Heavy-Hitter Oracle (Zhang et al., NeurIPS'23, arXiv 2306.14048; code FMInference/H2O).

Each KV head keeps ``heavy`` heavy hitters (largest attention weight accumulated since they
entered) plus the ``recent`` newest tokens: a cache of C = heavy + recent past tokens
(``H2OKVCache_LayerWise`` in h2o_hf/utils_real_drop/modify_llama.py). One decode step, per layer
and KV head, context S (= ``wl.seq``, the new token included), C = min(heavy + recent, S − 1):
  attention over the C cached rows and the new one: read 2·(C+1)·d·b, FLOPs G·(C+1)·(4d+5)
  scores: the attention kernel also writes each query head's fp32 logits (G·(C+1)·4); the update
          reads them and the C accumulated fp32 scores (C·4) and writes C+1 scores back
          (``_update_hh_score``: hh_score += attn.sum over queries)
  eviction, once S > heavy + recent: the reference keeps the top-``heavy`` of the older
          scores (``torch.topk(hh_score[:, :seq_len - recent_size], hh_size)``), i.e. drops the
          least-scored one; kvsim charges the kernel that finds it and writes the new token in
          its slot (kernels.py here): read (C+1)·(4 + 8) scores and int64 positions, write
          4 + 8; the new K and V are the 2·d·b ``kv_append`` write already counted.
          The reference code instead re-gathers the whole cache with a boolean mask every step (read 2·(C+1)·d·b, write
          2·C·d·b more); kvsim does not model that copy.

Defaults: heavy = recent = floor(0.1·S), from the HF scripts' ``--heavy_ratio 0.1
--recent_ratio 0.1`` (h2o_hf/scripts, run_text_generation.py), there a ratio of the prompt,
here of the current context, so the cache grows with S; set both to fix the budget.
A budget of S or more is not an error: the cache is simply not full yet (the official code
returns it unchanged) and attention equals dense, plus the score upkeep.

GQA: the official code is MHA-only (hh_score is [num_heads, seq] and masks a cache viewed with
num_heads). kvsim sums the scores over the G query heads of a KV head, so each KV head keeps one
set of C rows; per-query-head sets would force a KV head to hold the union, up to G·C rows.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...cost import Op, Resident
from ...kernel_contract import SCORE_BYTES
from ..attention import contiguous_target, decode_attention, full_kv_bytes, kv_append
from ..base import Method
from .spec import H2OSpec

POSITION_BYTES = 8.0  # int64 position held by each slot


class H2O(H2OSpec, Method):
    def attention_ops(self, model, wl) -> list[Op]:
        L, G = model.n_layers, model.group
        rows = self.cached_tokens(wl.seq) + 1.0
        ops = decode_attention("layers/attn/decode", model, wl, rows=rows, layers=L, logits=True,
                               target=contiguous_target(wl))  # the kept cache is compact
        # host: the logits and lse buffers, and the logits' view for the update
        ops[0] = replace(ops[0], torch_host_calls=ops[0].torch_host_calls + 3 * L)
        pairs = wl.batch * model.n_kv_heads  # (sequence, KV head): one score set each
        logits = G * rows * SCORE_BYTES  # this step's logits, fp32, of a KV head's G query heads
        ops.append(Op("layers/attn/score_update", "attention",
                      flops=pairs * (G * rows + rows),  # exp(logit − lse), sum over G heads, add
                      hbm_read=pairs * (logits + (rows - 1.0) * SCORE_BYTES),
                      hbm_write=pairs * rows * SCORE_BYTES, dtype="fp32", curve="accumulate")
                   .issued(triton=1, args=13).scaled(L))  # 13 arguments; curve: benchmarks/bench_scores.py
        return ops

    def _full(self, seq):
        heavy, recent = self.budgets(seq)
        return (np.asarray(seq) > heavy + recent).astype(float)

    def cache_ops(self, model, wl) -> list[Op]:
        """Before the cache is full the new K and V, its position and a zero score are stored
        (four torch calls); once full the eviction kernel writes them (``kv_append``'s bytes;
        one launch a layer charged either way)."""
        filling = 1.0 - self._full(wl.seq)
        append = replace(kv_append(model, wl), torch_calls=4 * filling * model.n_layers)
        return [append, self._evict(model, wl, self.cached_tokens(wl.seq) + 1.0)]

    def _evict(self, model, wl, rows) -> Op:
        """Once the cache is full, per (sequence, KV head) and layer: the least-scored slot
        outside the last ``recent`` positions takes the new token (kvsim/methods/h2o/kernels.py, one
        launch): read the C+1 fp32 scores and int64 positions, write the position and a zeroed
        score (the new K and V are ``kv_append``'s bytes). Cache upkeep after attention: not
        part of attention-only."""
        full = self._full(wl.seq)
        pairs = wl.batch * model.n_kv_heads
        op = Op("layers/attn/evict", "cache", flops=full * pairs * rows * 2,
                hbm_read=full * pairs * rows * (SCORE_BYTES + POSITION_BYTES),
                hbm_write=full * pairs * (SCORE_BYTES + POSITION_BYTES), launches=full, dtype="fp32",
                curve="evict").issued(triton=full, args=24 * full)  # 24 arguments; curve: bench_scores.py
        return op.scaled(model.n_layers)

    def kv_resident(self, model, wl) -> list[Resident]:
        rows = self.cached_tokens(wl.seq) + 1.0  # C slots + the one the next token fills
        scores = model.n_layers * wl.batch * model.n_kv_heads * rows * SCORE_BYTES
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl, rows=rows), kv=True),
                Resident("h2o_scores", gpu=scores, kv=True)]
