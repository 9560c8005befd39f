"""ADORE, adaptive token release with reconstruction (Zhang et al., ACL Findings 2024,
arXiv 2407.02328). The code was never published: everything below is from the paper, and items marked UNVERIFIED are kvsim's choices.

The KV cache holds ``m`` tokens. A controller scores each token once, when it arrives:
z_i = GRU(x_i, z_{i−1}) over the token embedding x_i, σ_i = sigmoid(MLP(p_i + z_i)) with p_i
the token's position embedding. Each step the new token enters and the lowest-scored cached
token is *released* (its KV dropped, its id and score kept). **Reconstruction**: the top-``R``
released tokens by score are recomputed with the current token, through every layer, from their
token embeddings (R rows gathered from the embedding table): the step pushes R+1 tokens through
the projections and MLP (FLOPs ×(R+1), weights read once: ``decoder.layer_ops`` with
``tokens_through_layers`` = R+1), appends R+1 rows of K/V (the R transient), and attention is
(R+1) queries over m + R + 1 keys per head: read 2·(m+R+1)·d·b, FLOPs G·(R+1)·(m+R+1)·(4d+5).

Per step, context S (= ``wl.seq``, the new token included): cached c = min(m, S−1), released
ρ = max(S−1−m, 0), reconstructed r = min(R, ρ). With m ≥ S−1 nothing has been released, so
nothing is reconstructed: the step is dense attention over S (plus the controller's GRU step).
Extra ops: the controller (GRU step + MLP, weights read once per step), the release (argmin over
the c+1 cached scores, once S > m), the choice of the r to rebuild (top-r of the ρ released
scores, in a row of the S − 1 earlier positions where the cached ones are −inf).

Defaults: the paper publishes none usable here; m = 2048 and R = 8 are kvsim's choice (UNVERIFIED).
The controller's size is UNVERIFIED: kvsim takes hidden 256 (GRU 3 gates D→256 and 256→256, MLP
256→256→1, ReLU) and a sinusoidal p_i (no table). UNVERIFIED too: that σ_i is computed once
(the formula has no dependence on the current step; a relative position would mean rescoring
all S tokens each step, 2·(h²+h)·S FLOPs and S·h·4 bytes more); that released tokens are rebuilt
from their embeddings (not from stored hidden states); that the rebuilt K/V are discarded after
the step; and that every rebuilt query attends to all m+R+1 keys (the paper's count).
GQA: the controller scores tokens, not heads, so one cached set serves every layer and KV head;
each KV head is read once for its G·(R+1) queries.
"""
from __future__ import annotations

import numpy as np

from dataclasses import replace

from ...cost import Cost, Op, Resident
from ...decoder import ROPE_ARGS, allreduce
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES
from ..attention import (contiguous_target, decode_attention, full_kv_bytes, kv_append, query_rope, small_kernels,
                         topk_op)
from ..base import Method
from .spec import ADORESpec

CONTROLLER_HIDDEN = 256  # UNVERIFIED: kvsim's choice of GRU/MLP width
CONTROLLER_ELEMENTWISE = 12.0  # FLOPs per hidden unit: 2 sigmoid + tanh gates, mix, p_i, ReLU


def controller_params(model) -> int:
    """GRU: W_ih 3h·D, W_hh 3h·h, biases 2·3h; MLP: h·h + h, then h + 1."""
    h = CONTROLLER_HIDDEN
    return 3 * h * (model.d_model + h) + 6 * h + h * h + h + h + 1


class ADORE(ADORESpec, Method):
    def tokens_through_layers(self, model, wl):
        return 1.0 + self.reconstructed_tokens(wl.seq)

    # ---- cost --------------------------------------------------------------------------------
    rotates_new_keys = False  # the chunk's keys are rotated by its attention (chunk_kv below)
    positions_tensor = False  # the runtime's step has its own positions (the chunk's)

    def query_ops(self, model, wl) -> list[Op]:
        """The chunk's R+1 queries rotated straight into the kernel's row order; host: the
        buffer and five views."""
        ops = query_rope(model, wl, tokens=1.0 + self.reconstructed_tokens(wl.seq))
        return [replace(op, torch_host_calls=6.0 * model.n_layers) for op in ops]

    def chunk_kv(self, model, wl) -> Op:
        """The chunk's K (rotated) and V written into the scratch rows after the m cached ones,
        which its attention reads: read and write 2·(R+1)·KV·b_a, a RoPE kernel and a copy;
        host: five views."""
        moved = 2 * wl.batch * (1.0 + self.reconstructed_tokens(wl.seq)) * model.kv_dim * wl.b_a
        op = Op("layers/attn/chunk_kv", "attention", flops=3.0 * moved / wl.b_a, hbm_read=moved,
                hbm_write=moved, launches=2.0, dtype="fp32").issued(torch=1, triton=1, args=ROPE_ARGS,
                                                                    torch_host=5)
        return op.scaled(model.n_layers)

    def attention_ops(self, model, wl) -> list[Op]:
        r = self.reconstructed_tokens(wl.seq)
        rows = self.cached_tokens(wl.seq) + r + 1.0  # m + R + 1 keys
        attention = decode_attention("layers/attn/decode", model, wl, rows=rows, layers=model.n_layers,
                                     query_heads_per_kv=model.group * (1.0 + r),  # (R+1) queries per head
                                     target=contiguous_target(wl))  # the m kept tokens are compact
        # the kernel's output rows come per (KV head, token, group member); the O projection
        # takes them per (token, head): one copy, read and write (R+1)·H·d·b_a per sequence
        moved = wl.batch * (1.0 + r) * model.n_heads * model.head_dim * wl.b_a
        several = (r > 0).astype(float)  # one token: the reorder is a view
        reorder = Op("adore/out_reorder", "attention", hbm_read=moved * several, hbm_write=moved * several,
                     launches=several, dtype="fp32").issued(torch=several, torch_host=3.0 - several)
        return [self.chunk_kv(model, wl), *attention, reorder.scaled(model.n_layers)]

    def cache_ops(self, model, wl) -> list[Op]:
        # the new token's K/V row copied from the scratch rows into its slot: 2·KV·b_kv per
        # layer, one Triton launch (host: three views and a reshape)
        append = replace(kv_append(model, wl), torch_calls=0.0, torch_host_calls=4.0 * model.n_layers,
                         triton_launches=1.0 * model.n_layers, triton_args=16.0 * model.n_layers)
        releasing = (wl.seq > self.m).astype(float)
        cached = self.cached_tokens(wl.seq) + 1.0
        # argmin over the c+1 cached fp32 scores; the released id and score appended (4 + 4);
        # one Triton kernel; while the cache fills, the slot's position, score and the next
        # slot are three tiny torch calls instead (host calls; their GPU time is not charged)
        filling = 1.0 - releasing
        release = Op("adore/release", "cache", flops=wl.batch * cached * releasing,
                     hbm_read=wl.batch * cached * SCORE_BYTES * releasing,
                     hbm_write=wl.batch * (INDEX_BYTES + SCORE_BYTES) * releasing,
                     launches=releasing, dtype="fp32").issued(
                         triton=releasing, args=11 * releasing, torch=3 * filling, torch_host=filling)
        return [append, release]

    def extra_ops(self, model, wl) -> list[Op]:
        released, r = self.released_tokens(wl.seq), self.reconstructed_tokens(wl.seq)
        # top-r of the released tokens' scores, one choice per sequence for all layers, over a
        # row of the S − 1 earlier positions with the cached ones at −inf (kept as tokens are
        # released: one contiguous top-k, kvsim/methods/adore/runtime.py)
        choose = topk_op("adore/reconstruct_select", wl.seq - 1.0, r, wl.batch, 1, wl)
        choose = choose.scaled((released > 0).astype(float))
        # the chunk's positions (two stores), its token ids (a gather and a cat), the queries'
        # positions (a copy once the chunk has several tokens): small kernels every step; host:
        # the top-k call (also with nothing released) and the views
        choose = replace(choose, torch_calls=1.0)
        several = (r > 0).astype(float)
        return [*self.controller_ops(model, wl, tokens=1.0), choose,
                small_kernels("adore/chunk_lists", 4.0 + several, 1, torch_host=5.0 - several)]

    def tp_ops(self, model, wl, gpus) -> list[Op]:
        """Tokens are scored, not heads: every GPU runs the controller and keeps the same scores.
        Its input, the new token's embedding, is a lookup in the vocabulary-split table of its
        own: one all-reduce of B·D·b_a per step (runtime/tp_methods.py)."""
        return [allreduce("adore/controller_embed_allreduce", wl.batch * model.d_model * wl.b_a, gpus)]

    def controller_ops(self, model, wl, tokens=1.0) -> list[Op]:
        """GRU step (the runtime's attention-only step runs it too) and the score MLP for
        ``tokens`` new tokens per sequence; weights read once.
        GRU: read 3h·(D+h)·b_w + per token D·b_a (embedding) + h·4 (z_{i−1}); write h·4 (z_i).
        MLP: read (h²+2h+1)·b_w + per token h·4; write 4 (σ_i)."""
        h, rows = CONTROLLER_HIDDEN, wl.batch * tokens
        gru_weights, mlp_weights = 3 * h * (model.d_model + h) + 6 * h, h * h + 2 * h + 1
        # the embedding gather, the two GEMMs and the cell; host: the gather, the cell, 3 views
        gru = Op("adore/controller_gru", "attention", flops=rows * (2 * 3 * h * (model.d_model + h) + 8 * h),
                 hbm_read=gru_weights * wl.b_w + rows * (model.d_model * wl.b_a + h * 4.0),
                 hbm_write=rows * h * 4.0, launches=4.0, dtype=wl.compute_dtype).issued(torch=1, gemm=1, torch_host=3)
        # σ (one Triton kernel); host: the state kept, the token id stored, the context length
        score = Op("adore/controller_score", "linear", flops=rows * (2 * (h * h + h) + 4 * h),
                   hbm_read=mlp_weights * wl.b_w + rows * h * 4.0, hbm_write=rows * SCORE_BYTES,
                   launches=4.0, dtype=wl.compute_dtype).issued(torch=3, triton=1, args=10, torch_host=1)
        return [gru, score]

    def prefill_cost(self, model, hw, wl) -> Cost:
        """Dense prefill, plus the controller over the prompt and the choice of the m kept."""
        kept = np.minimum(float(self.m), wl.seq)
        keep = topk_op("adore/prefill_select", wl.seq, kept, wl.batch, 1, wl)
        return super().prefill_cost(model, hw, wl) + Cost((*self.controller_ops(model, wl, wl.seq), keep))

    def kv_resident(self, model, wl) -> list[Resident]:
        r = self.reconstructed_tokens(wl.seq)
        rows = self.cached_tokens(wl.seq) + 1.0 + r  # m cached + new + r transient
        released = self.released_tokens(wl.seq)
        # per sequence: scores of the cached, id + score of each released token, GRU state
        meta = wl.batch * ((rows - r) * SCORE_BYTES + released * (INDEX_BYTES + SCORE_BYTES)
                           + CONTROLLER_HIDDEN * 4.0)
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl, rows=rows), kv=True),
                Resident("adore_scores", gpu=meta, kv=True),
                Resident("adore_controller", gpu=controller_params(model) * wl.b_w)]
