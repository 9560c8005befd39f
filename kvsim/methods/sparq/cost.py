"""SparQ Attention (Ribar et al., arXiv 2312.04985): approximate the scores from the r largest
components of q, fetch only the top-k rows, and fill in the rest of the softmax mass with the
mean of V. Code: graphcore-research/llm-inference-research (llminference/methods/ann_attention.py,
the accuracy reference) and graphcore-research/sparq-gpt-fast (sparq.py, the speed reference).

Defaults:
  r = d/8 and k = S/16: compression ratio 8 of sparq-gpt-fast ``get_r_k_for_compression_ratio``
    (r = round(d/8), k = round(S/(2·8))); kvsim derives k from each context of the sweep.
  local = k/4: the local window of the paper's sweeps (``local_k`` in
    ann_attention.py). It is part of the k rows: the top-k runs over the S − local older tokens.
  k counts every gathered row, the current token included (2·k·d·b; the
    accuracy code's k excludes the current token, one row of difference).

GQA: selection is group-shared (both i1 and i2): |q| is summed over the G query heads of a KV
head before the top-r, and the approximate scores are summed over the group before the top-k
(ann_attention.py ``SparseQ.forward`` and ``AnnAttention.forward``). Sharing is what keeps the
step-2 read at S·r·b and the gather at 2·k·d·b per KV head; a per-query-head selection would read
up to G times as much. α stays per query head (its own softmax mass at i2).

Bytes per KV head and layer (G query heads, b KV bytes, b_a activation bytes, 4-byte indices):
  step 1   read G·d·b_a (q) ; write r·4 (i1) + G·4 (τ), one kernel (kvsim/methods/sparq/kernels_steps.py)
  step 2   read S·r·b (K[:, i1] from the d-major copy of K) + G·r·b_a + r·4 ; write G·S·4
           (approximate logits in fp32, as kvsim/methods/sparq/kernels.py keeps them; sparq-gpt-fast's
           ``QK_hat`` is in the activation dtype, 2 bytes less per score)
  softmax  read G·S·4 ; write G·S·4 (ŝ) + S·4 (their group sum, the last l forced in, written
           by the same pass)
  top-k    read S·4 ; write k·8: the whole group row, the last l at +inf so they are among
           the k (kvsim/methods/sparq/kernels.py); the same choice as a top-(k−l) over the S−l older ones
  gather   2·k·d·b + k·4 + q and o (kvsim.methods.attention.decode_attention)
  α, mix   one kernel: read G·k·4 (ŝ at i2) + k·4 (i2) + y G·d·b_a + Σv d·4 ; write out G·d·b_a
  Σv       with the cache append: read Σv d·4 + v d·b_a ; write Σv d·4 (the fp32 running sum
           of V that gives v̄ = Σv/n; sparq-gpt-fast keeps a running mean, ``RunningVMean``)
Cache: K written twice (token-major for the gather, d-major for step 2): 3·d·b per token and KV
head instead of 2·d·b; memory +S·d·b per KV head (+50% KV) plus v̄ (d·4).
"""
from __future__ import annotations

from ...cost import Op, Resident
from ...models import ModelConfig
from ...offload import uniform_share
from ...workload import Workload
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES
from ..attention import decode_attention, full_kv_bytes, kv_append, small_kernels, topk_op
from ..base import Method, prompt_layer_bytes
from .spec import SparQSpec

V_MEAN_BYTES = 4.0  # v̄ kept in fp32 (sparq-gpt-fast RunningVMean)


class SparQ(SparQSpec, Method):
    def attention_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        S, k, local = wl.seq, self.rows(wl), self.local_rows(wl)
        L, heads = model.n_layers, wl.batch * model.n_kv_heads
        # the top-k and its int32 cast (one more kernel); host: the counts' view and expand
        topk = topk_op("layers/attn/sparq_topk", S, k, heads, 1, wl)
        cast = small_kernels("layers/attn/sparq_list", 1.0, L, torch_host=2.0)
        return [self._step1(model, wl, heads).scaled(L),
                *self._approx_scores(model, wl, heads, L),
                topk.scaled(L), cast,
                *decode_attention("layers/attn/sparq_gather", model, wl, rows=k, layers=L,
                                  index_bytes=INDEX_BYTES, gathered=True),
                self._mix(model, wl, heads).scaled(L)]

    def _step1(self, model, wl, heads) -> Op:
        # top-r of |q| summed over the group and τ per query head, one kernel
        # (kvsim/methods/sparq/kernels_steps.py): read G·d·b_a ; write r·4 (i1) + G·4 (τ) ; d² rank compares
        G, d, r = model.group, model.head_dim, self.rank(model)
        return Op("layers/attn/sparq_topr", "attention", flops=heads * (2 * G * d + d * d),
                  hbm_read=heads * G * d * wl.b_a, hbm_write=heads * (r * INDEX_BYTES + G * 4.0),
                  dtype="fp32").issued(triton=1, args=8, torch_host=2)  # host: i1 and τ

    def _approx_scores(self, model, wl, heads, layers) -> list[Op]:
        G, r, S, b = model.group, self.rank(model), wl.seq, wl.b_kv
        # q[i1]·K[:, i1]ᵀ: read S·r·b (d-major K) + G·r·b_a + r·4 ; write G·S·4 fp32 logits
        scores = Op("layers/attn/sparq_score_approx", "attention", flops=heads * G * S * 2 * r,
                    hbm_read=heads * (S * r * b + G * r * wl.b_a + r * INDEX_BYTES),
                    hbm_write=heads * G * S * SCORE_BYTES, dtype=wl.compute_dtype,
                    curve="sparq_scores").issued(  # curve: benchmarks/bench_scores.py
                        triton=1, args=24, torch_host=4)  # host: logits, group sums and their buffers
        # softmax(·/τ) per head and the sum over the group in one pass: read G·S·4 ; write (G+1)·S·4
        softmax = Op("layers/attn/sparq_softmax", "attention", flops=heads * S * 6 * G,
                     hbm_read=heads * G * S * SCORE_BYTES, hbm_write=heads * (G + 1) * S * SCORE_BYTES,
                     dtype="fp32", curve="sparq_softmax").issued(triton=1, args=14)  # its input in the L2
        return [scores.scaled(layers), softmax.scaled(layers)]

    def _mix(self, model, wl, heads) -> Op:
        # α = Σ_{i∈i2} ŝ_i per query head, then out = α·y + (1−α)·Σv/n, one kernel
        # (kvsim/methods/sparq/kernels_steps.py): read G·k·4 (ŝ at i2) + k·4 (i2) + G·d·b_a (y) + d·4 (Σv) ;
        # write G·d·b_a
        G, d, k = model.group, model.head_dim, self.rows(wl)
        return Op("layers/attn/sparq_mix", "attention", flops=heads * G * (k + 3 * d),
                  hbm_read=heads * (G * k * SCORE_BYTES + k * INDEX_BYTES + G * d * wl.b_a + d * V_MEAN_BYTES),
                  hbm_write=heads * G * d * wl.b_a, dtype="fp32").issued(triton=1, args=18, torch_host=1)

    def host_rows_read(self, model, wl, host):
        """Offloaded (kvsim.offload): per KV head and layer the k − local top-k rows, taken as
        spread evenly over the S − local older tokens (the local ones are the newest)."""
        k, local = self.rows(wl), self.local_rows(wl)
        picked = uniform_share(k - local, wl.seq - local, host)
        return 0.0, model.n_layers * model.n_kv_heads * picked  # (block rows, gathered rows)

    def cache_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        # K twice + V: 1.5 × the (K, V) row, i.e. write 3·d·b per token and KV head; and the
        # fp32 running sum of V: read d·4 + d·b_a (v), write d·4
        heads, d = wl.batch * model.n_kv_heads, model.head_dim
        v_sum = Op("layers/attn/sparq_v_sum", "cache", flops=heads * d,
                   hbm_read=heads * d * (V_MEAN_BYTES + wl.b_a), hbm_write=heads * d * V_MEAN_BYTES,
                   launches=2.0, dtype="fp32").issued(torch=2)  # v to fp32, then the add
        return [kv_append(model, wl, copies=1.5), v_sum.scaled(model.n_layers)]

    def prefill_scratch(self, model: ModelConfig, wl: Workload):
        """Beside the shared prompt keys and values: the values cast to fp32 for their mean,
        B·Hkv·S·d·4 bytes."""
        return super().prefill_scratch(model, wl) + prompt_layer_bytes(model, wl) * 4 / wl.b_a

    def kv_resident(self, model: ModelConfig, wl: Workload) -> list[Resident]:
        full = full_kv_bytes(model, wl)
        v_mean = model.n_layers * wl.batch * model.n_kv_heads * model.head_dim * V_MEAN_BYTES
        return [Resident("kv_cache", gpu=full, kv=True),
                Resident("sparq_k_dmajor", gpu=0.5 * full, kv=True),  # S·d·b per KV head and layer
                Resident("sparq_v_mean", gpu=v_mean, kv=True)]
