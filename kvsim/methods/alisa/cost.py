"""ALISA's Sparse Window Attention (SWA) with optional INT8 KV (Zhao et al., ISCA'24,
arXiv 2403.17312). No public code: everything below is read from the paper (its SWA and KV
compression sections). The three-phase GPU/CPU/recompute scheduling is
``kvsim.schedule``'s job, which calls this cost per step; here all KV stays on the GPU.

One decode step, per layer and sequence, current length ``n`` (= ``wl.seq``, the new token
included), caching ratio ``r = 1 − sparsity``:
  k      = round(n·r/2)                      (SWA: half the budget local, half global)
  local  = the last k positions (at least the new token)
  global = top-k of the other n − k tokens by attention weight accumulated over the last k steps,
           summed over all heads -> ONE set per layer (SWA), so under GQA every KV head of a layer
           gathers the same 2k rows; each query head attends to them as usual (G per KV head).
  attention over the 2k gathered rows: per KV head 2·2k·d·b bytes (= 4·k·d·b)
           + 2k·4 int32 indices, FLOPs G·2k·(4d+5) (≈ 8·k·d per query head)
  scores: the n fp32 accumulated scores are read and written back (n·4 each way) and the
           attention kernel writes this step's weights (H_q·2k·4) which the update reads
  top-k:  k of the n − k candidates (read (n−k)·4, write k·8)

Defaults: sparsity 0.8, the paper's throughput setting ("80% KV sparsity", §6);
kv_bits 16, i.e. uncompressed KV in the workload's 16-bit dtype. kv_bits = 8 is ALISA's INT8 KV
compression: asymmetric, scale (max−min)/255 and a zero point, new K and V quantized once when
appended and dequantized as attention reads them. kvsim's KV dtype machinery carries it
(``Workload.kv_dtype = "int8"``: 1 byte per element + an fp16 scale and zero point per (token,
head) row, quantize FLOPs in ``kv_append``); the paper groups its scales channel-wise, a
difference of a few bytes per row that kvsim ignores. Per gathered row of K (or V) the runtime's
kernel reads d int8 + an fp16 scale + an fp16 zero point (kernels/int8_probs.py), the bytes
``kv_row_bytes`` counts, + the 4-B index. The attention kernel adds 2 FLOPs per
element read (subtract zero point, multiply scale). ``--param kv_bits=8`` and ``--kv-dtype int8``
are the same configuration and cost the same; the default kv_bits=16 follows the workload's KV
dtype; an explicit kv_bits=16 with an 8-bit KV dtype, or kv_bits=8 with fp8, is a contradiction
and an error. (The report's "KV" column shows the workload's dtype, not the one ALISA uses.)

UNVERIFIED (no code): how "accumulated over the last k steps" retires older contributions — we
charge one full read-modify-write pass over the n scores per step; that the local window holds
the new token; that the kernel gathers local rows through the same index list (n·4 bytes at most).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...cost import Cost, Op, Resident
from ...decoder import allreduce
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES
from ...offload import uniform_share
from ..attention import decode_attention, full_kv_bytes, small_kernels, topk_op
from ..base import Method
from .spec import ALISASpec

DEQUANT_FLOPS = 2.0  # per int8 element read: (x − zero)·scale (ALISA's INT8 KV)


class ALISA(ALISASpec, Method):
    def score_bytes(self, model, wl):
        """Accumulated fp32 scores held: n·4 per layer and sequence (one set per layer)."""
        return model.n_layers * wl.batch * wl.seq * SCORE_BYTES

    def host_rows_read(self, model, wl, host):
        """Offloaded (kvsim.offload): per KV head and layer, the global rows (top-k of the
        n − k older tokens, taken as spread evenly) plus any local rows below H."""
        n = np.asarray(wl.seq, dtype=float)
        local = self.local_tokens(n)
        older = n - local
        rows = uniform_share(self.global_tokens(n), older, host) + np.maximum(host - older, 0.0)
        return 0.0, model.n_layers * model.n_kv_heads * rows  # (block rows, gathered rows)

    # ---- cost --------------------------------------------------------------------------------
    def cost(self, model, hw, wl) -> Cost:
        return super().cost(model, hw, self.kv_workload(wl))

    def prefill_cost(self, model, hw, wl) -> Cost:
        return super().prefill_cost(model, hw, self.kv_workload(wl))

    def attention_ops(self, model, wl) -> list[Op]:
        n, L = wl.seq, model.n_layers
        rows = self.selected_tokens(n)
        main, combine = decode_attention("layers/attn/decode", model, wl, rows=rows, layers=L, logits=True,
                                         index_bytes=INDEX_BYTES, gathered=True)  # + rows·4 int32 indices
        # host: the logits and lse buffers, the list and counts as views for every KV head
        main = replace(main, torch_host_calls=main.torch_host_calls + 6 * L)
        if wl.kv_dtype == "int8":  # dequantize K and V as they are read: 2 FLOPs × 2·rows·d
            extra = L * wl.batch * model.n_kv_heads * rows * 2 * model.head_dim * DEQUANT_FLOPS
            main = replace(main, flops=main.flops + extra)
        local = self.local_tokens(n)
        # top-k of the n − local candidates' fp32 scores, one selection per (sequence, layer)
        select = topk_op("layers/attn/topk", n - local, self.global_tokens(n), wl.batch, L, wl)
        # with the local rows' indices (an arange), the list (a cat) and its two int32 casts:
        # four more kernels a layer; host: two views
        select = replace(select, torch_calls=1.0 * L)
        glue = small_kernels("layers/attn/select_lists", 4.0, L, torch_host=2.0)
        return [select, glue, main, combine, self._accumulate(model, wl, rows)]

    def tp_ops(self, model, wl, gpus) -> list[Op]:
        """One global set per layer from scores summed over all heads: each GPU sums its heads'
        weights at the 2k selected positions, one all-reduce of B·2k·4 bytes per layer adds the
        GPUs' sums (runtime/tp_methods.py), and every GPU keeps the same scores."""
        rows = self.selected_tokens(wl.seq)
        return [allreduce("layers/attn/score_allreduce", wl.batch * rows * SCORE_BYTES, gpus, count=model.n_layers)]

    def _accumulate(self, model, wl, rows) -> Op:
        """Per layer and sequence: the attention kernel writes each query head's fp32 logits over
        the gathered rows (H_q·rows·4, decode_attention's ``logits``); the update
        (kernels/scores.py ``accumulate_weights``, indexed) reads them, sums the weights over
        heads and adds them into the accumulated scores at the rows' positions only: read the
        rows' int32 indices and scores, write the scores (rows·4 each)."""
        logits = model.n_heads * rows * SCORE_BYTES
        return Op("layers/attn/score_update", "attention",
                  flops=wl.batch * rows * (2 * model.n_heads + 1),
                  hbm_read=wl.batch * (logits + rows * (INDEX_BYTES + SCORE_BYTES)),
                  hbm_write=wl.batch * rows * SCORE_BYTES,
                  dtype="fp32", curve="accumulate_indexed").issued(triton=1, args=13).scaled(model.n_layers)

    def kv_resident(self, model, wl) -> list[Resident]:
        # the whole KV stays (offload/deletion is the scheduler's) + n·4 scores per layer
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl), kv=True),
                Resident("alisa_scores", gpu=self.score_bytes(model, wl), kv=True)]

