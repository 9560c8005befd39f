"""TidalDecode (Yang et al., arXiv 2410.05076): position-persistent sparse attention. A few layers
attend densely and choose the tokens; the layers after them reuse that choice.
Code: DerrickYLJ/TidalDecode.

Layer schedule of an L-layer model (tidal/models/llama.py, the efficient model): layers 0–1 dense;
layer 2 dense + selection; layers 3 .. reselect_layer−1 sparse; ``reselect_layer`` dense +
re-selection; the later layers sparse. So 4 layers attend densely and L − 4 sparsely, wherever the
re-selection layer sits; ``reselect_layer`` only has to lie in 3 .. L−1.

Defaults:
  k = 256: ``--token_budget`` default of scripts/bench_textgen.py, the efficiency benchmark; the
    paper's examples use 128 and 256 (its accuracy runs go up to 4096).
  reselect_layer = 13: ``--correction_layer 13`` in examples/run_tidal_llama.sh,
    experiments/LongBench/run_longbench.sh and the AIME scripts. The efficient model hard-codes
    12; the cost is the same for any layer in range.
  correction_period = 0 (off): KV-cache correction is described in the paper; the repository only
    has an experiment script (experiments/reasoning/aime_pass_1/eval_aime_cache_correction.py,
    stride 128) that re-prefills the whole context. kvsim models the paper's form: every N steps
    the N tokens decoded since the last correction go through all layers again with dense
    attention over the context, refilling their K/V. That pass costs, amortized per step,
    1/N of (N tokens through the projections and MLP + N queries of dense attention reading the
    cache once + N rows of KV written): ops named ``correction/*``.

Selection (SearchAttention + decode_topk): top-k over the raw pre-softmax logits, per query head,
over the S − 1 earlier tokens (k is clipped to S − 1, as ``min(kv_seq_len, top_k)`` in
src/tidal_build/modify_llama.py); the current token is always added, so k + 1 rows.
Selection layer bytes (``layers/attn/select_decode``): dense + H_q·S·4 fp32 logits written by the
attention kernel and read by the top-k + H_q·k·8 values and indices written.
Sparse layer per query head: 2·(k+1)·d·b + k·4 bytes, 4·(k+1)·d FLOPs.

GQA: selection is per query head (the reference repeats K/V to H_q heads before the top-k), so a
KV head serves the union of G sets. kvsim takes the worst case, G·(k+1) rows per KV head with no
overlap, because the gathered kernel reads each query head's own list (no dedup); on MHA it is
exact.
"""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ...cost import Op
from ...decoder import layer_ops
from ...errors import KvsimError
from ...kernel_contract import INDEX_BYTES
from ...models import ModelConfig
from ...offload import uniform_share
from ...workload import Workload
from ..attention import contiguous_target, decode_attention, kv_append, query_rope, small_kernels, topk_op
from ..base import Method
from .spec import DENSE_LAYERS, SELECTION_LAYERS, TidalDecodeSpec


class TidalDecode(TidalDecodeSpec, Method):
    prefetches_blocks: ClassVar[bool] = True  # offloaded: dense and selection layers' blocks on the copy stream (kvsim.offload)
    block_logits_layers: ClassVar[int] = SELECTION_LAYERS  # offloaded: block layers whose pieces write logits (kvsim.offload)

    def attention_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        L, S, Hq = model.n_layers, wl.seq, model.n_heads
        full = DENSE_LAYERS + SELECTION_LAYERS
        dense = decode_attention("layers/attn/dense", model, wl, rows=S, layers=DENSE_LAYERS,
                                 target=contiguous_target(wl))
        # the selection layers' attention kernel also writes the fp32 logits, H_q·S·4 per layer
        # (kernels/scores.py; the reference's eager attention materializes them too): its own curve
        select_main, select_combine = decode_attention("layers/attn/select_decode", model, wl, rows=S,
                                                       layers=SELECTION_LAYERS, target=contiguous_target(wl),
                                                       logits=True)
        # host: the logits and lse buffers and the logits' view for the top-k, per selection layer
        select_main = replace(select_main, torch_host_calls=select_main.torch_host_calls + 3 * SELECTION_LAYERS)
        picked = self.selected(wl)
        # read H_q·S·4 logits ; write H_q·k·8
        topk = topk_op("layers/attn/select_topk", S, picked, wl.batch * Hq, SELECTION_LAYERS, wl)
        # then the current token's index and the counts (two fills), the list (a cat) and its
        # int32 cast: four small kernels per selection layer, five torch calls with the top-k
        glue = small_kernels("layers/attn/select_lists", 4.0, SELECTION_LAYERS)
        # each query head reads its own k+1 rows: 2·(k+1)·d·b + k·4 (no index for the current token)
        rows = picked + 1.0
        sparse = decode_attention("layers/attn/sparse", model, wl, rows=rows, layers=L - full,
                                  kv_heads=Hq, query_heads_per_kv=1,
                                  index_bytes=INDEX_BYTES * picked / rows, gathered=True)
        return [*dense, select_main, select_combine, topk, glue, *sparse, *self._correction_attention(model, wl)]

    def host_rows_read(self, model, wl, host):
        """Offloaded (kvsim.offload): the dense and selection layers read [0, H) of every KV head
        as one block; each query head of a sparse layer gathers its own top-k (the current token
        is on the GPU), taken as spread evenly over the S − 1 earlier tokens."""
        if self.correction_period:
            raise KvsimError("tidaldecode: offload needs correction_period=0 (the correction "
                             "rewrites cached rows on the GPU)")
        full = DENSE_LAYERS + SELECTION_LAYERS
        picked = uniform_share(self.selected(wl), wl.seq - 1.0, host)
        return full * model.n_kv_heads * host, (model.n_layers - full) * model.n_heads * picked

    def _correction_attention(self, model: ModelConfig, wl: Workload) -> list[Op]:
        """Every N steps, N queries per KV-head group attend densely over the cache in every
        layer; amortized per step: FLOPs of one query, K/V read once per N steps.
        read 2·S·d·b/N + 2·G·d·b_a (q, o) ; FLOPs G·S·(4·d + 5), per KV head and layer."""
        N = self.correction_period
        if N == 0:
            return []
        G, d, S = model.group, model.head_dim, wl.seq
        heads = wl.batch * model.n_kv_heads
        kv = heads * S * 2 * d * wl.b_kv / N
        q_o = heads * G * d * wl.b_a
        op = Op("correction/attn", "attention", flops=heads * G * S * (4 * d + 5),
                hbm_read=kv + q_o, hbm_write=q_o, launches=1.0 / N, dtype=wl.compute_dtype)
        return [op.scaled(model.n_layers)]

    def extra_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        """The correction pass outside attention: N tokens through every layer's projections and
        MLP (weights read once per pass) and their K/V rewritten, divided by N per step."""
        N = self.correction_period
        if N == 0:
            return []
        ops = [*layer_ops(model, wl, tokens=N), kv_append(model, wl, tokens=N)]
        rotate_q = [replace(op, name="rope_q") for op in query_rope(model, wl, tokens=N)]  # the N queries
        return [replace(op.scaled(1.0 / N), name="correction/" + op.name, kind="recompute")
                for op in ops + rotate_q]
