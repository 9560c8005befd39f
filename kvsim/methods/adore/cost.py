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

from ...cost import Cost, Op, Resident
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES
from ..attention import contiguous_target, decode_attention, full_kv_bytes, kv_append, topk_op
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
    def attention_ops(self, model, wl) -> list[Op]:
        r = self.reconstructed_tokens(wl.seq)
        rows = self.cached_tokens(wl.seq) + r + 1.0  # m + R + 1 keys
        attention = decode_attention("layers/attn/decode", model, wl, rows=rows, layers=model.n_layers,
                                     query_heads_per_kv=model.group * (1.0 + r),  # (R+1) queries per head
                                     target=contiguous_target(wl))  # the m kept tokens are compact
        # the kernel's output rows come per (KV head, token, group member); the O projection
        # takes them per (token, head): one copy, read and write (R+1)·H·d·b_a per sequence
        moved = wl.batch * (1.0 + r) * model.n_heads * model.head_dim * wl.b_a
        reorder = Op("adore/out_reorder", "attention", hbm_read=moved, hbm_write=moved, dtype="fp32")
        return attention + [reorder.scaled(model.n_layers)]

    def cache_ops(self, model, wl) -> list[Op]:
        # K/V of the new token and the r rebuilt ones: 2·KV·b_kv each, per layer
        append = kv_append(model, wl, tokens=1.0 + self.reconstructed_tokens(wl.seq))
        releasing = (wl.seq > self.m).astype(float)
        cached = self.cached_tokens(wl.seq) + 1.0
        # argmin over the c+1 cached fp32 scores; the released id and score appended (4 + 4)
        release = Op("adore/release", "cache", flops=wl.batch * cached * releasing,
                     hbm_read=wl.batch * cached * SCORE_BYTES * releasing,
                     hbm_write=wl.batch * (INDEX_BYTES + SCORE_BYTES) * releasing,
                     launches=releasing, dtype="fp32")
        return [append, release]

    def extra_ops(self, model, wl) -> list[Op]:
        released, r = self.released_tokens(wl.seq), self.reconstructed_tokens(wl.seq)
        # top-r of the released tokens' scores, one choice per sequence for all layers, over a
        # row of the S − 1 earlier positions with the cached ones at −inf (kept as tokens are
        # released: one contiguous top-k, kvsim/methods/adore/runtime.py)
        choose = topk_op("adore/reconstruct_select", wl.seq - 1.0, r, wl.batch, 1, wl)
        return [self.controller_op(model, wl, tokens=1.0),
                choose.scaled((released > 0).astype(float))]

    def controller_op(self, model, wl, tokens=1.0) -> Op:
        """GRU step + MLP for ``tokens`` new tokens per sequence; weights read once.
        read params·b_w + per token D·b_a (embedding) + h·4 (z_{i−1}); write h·4 (z_i) + 4 (σ_i)."""
        h, rows = CONTROLLER_HIDDEN, wl.batch * tokens
        matmul = 3 * h * (model.d_model + h) + h * h + h  # multiply-adds per token
        return Op("adore/controller", "linear", flops=rows * (2 * matmul + CONTROLLER_ELEMENTWISE * h),
                  hbm_read=controller_params(model) * wl.b_w + rows * (model.d_model * wl.b_a + h * 4.0),
                  hbm_write=rows * (h * 4.0 + SCORE_BYTES), dtype=wl.compute_dtype)

    def prefill_cost(self, model, hw, wl) -> Cost:
        """Dense prefill, plus the controller over the prompt and the choice of the m kept."""
        kept = np.minimum(float(self.m), wl.seq)
        keep = topk_op("adore/prefill_select", wl.seq, kept, wl.batch, 1, wl)
        return super().prefill_cost(model, hw, wl) + Cost((self.controller_op(model, wl, wl.seq), keep))

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
