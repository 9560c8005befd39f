"""TidalDecode: position-persistent sparse attention (arXiv 2410.05076 §3; DerrickYLJ/TidalDecode).

Layer schedule: layers 0-1 dense; layer 2 dense + token selection; layers 3.. sparse over the
selected tokens; ``reselect_layer`` dense + re-selection; later layers sparse again.
Selection = top-k of the pre-softmax logits per query head over the tokens before the current
one, which is always added: k+1 indices per query head (Hsel = H), so under GQA each KV head reads
the union of its G lists. Selection layers' attention kernel also writes the fp32 logits
(H·S·4 B, kernels/scores.py) that the top-k reads (top-k of the logits = of the weights).
Sparse layer per query head: 2·(k+1)·d·b + (k+1)·4 bytes.
KV-cache correction (``correction_period`` > 0; described by the paper, absent from its code):
every period steps the last period tokens are re-run through all layers with dense causal
attention and their K/V rewritten.
"""
from __future__ import annotations

import torch

from kvsim.runtime import ops
from kvsim.runtime.method import RuntimeMethod

from .spec import SELECTION_LAYER, TidalDecodeSpec


class TidalDecode(RuntimeMethod):
    spec_class = TidalDecodeSpec

    def check(self) -> None:
        super().check()
        if self.spec.offload > 0 and self.p["correction_period"]:
            raise ValueError("tidaldecode: offload needs correction_period=0 (the correction rewrites "
                             "cached rows on the GPU)")

    def allocate(self) -> None:
        super().allocate()
        self.selected = None  # (indices [B,H,k+1] int32, counts [B,H]) from the last selection layer
        if self.p["correction_period"]:
            s = self.spec
            self.tokens = torch.zeros(s.batch, s.max_seq, dtype=torch.long, device=s.device)

    def role(self, layer: int) -> str:
        if layer < SELECTION_LAYER:
            return "dense"
        if layer in (SELECTION_LAYER, self.p["reselect_layer"]):
            return "select"
        return "sparse"

    def reads_every_row(self, layer):
        return self.role(layer) != "sparse"

    def read(self, layer, q):
        self.prefetch_blocks(layer)  # offloaded: dense and selection layers' blocks on the copy stream
        q = self.rotary(q, self.n)
        n = self.n + 1
        role = self.role(layer)
        if role == "dense":
            return self.kv.attend_all(layer, q, n)
        if role == "sparse":
            return self.kv.attend_indices(layer, q, *self.selected)
        o, _lse, logits = self.kv.attend_all(layer, q, n, logits=True)
        B, H, _ = logits.shape
        k = min(self.p["k"], n - 1)
        top = (logits[..., : n - 1].topk(k, dim=-1, sorted=False).indices if k  # any order: no sort
               else logits.new_zeros((B, H, 0), dtype=torch.long))
        current = torch.full((B, H, 1), n - 1, dtype=top.dtype, device=top.device)
        counts = torch.full((B, H), k + 1, dtype=torch.int32, device=q.device)
        self.selected = (torch.cat([top, current], -1).int(), counts)
        return o

    def begin_prefill(self, n, tokens, model):
        if self.p["correction_period"]:
            self.tokens[:, :n] = tokens

    def decode_step(self, model, tokens):
        if self.p["correction_period"]:
            self.tokens[:, self.n] = tokens
        logits = super().decode_step(model, tokens)
        period = self.p["correction_period"]
        if period and self.n % period == 0 and self.n >= period:
            self.correct(model, self.n - period, self.n)
        return logits

    def correct(self, model, first: int, last: int) -> None:
        """Recompute K/V of positions [first, last) with dense causal attention (a prefill chunk
        over the cache: T = last − first tokens through projections and MLP)."""
        B, dev = self.spec.batch, self.spec.device
        positions = torch.arange(first, last, device=dev).expand(B, -1)
        Hkv, G, T = self.spec.n_kv_heads, self.spec.group, last - first
        key_pos = torch.arange(self.kv.rows, device=dev, dtype=torch.int32).expand(B, -1)  # row = position
        q_pos = positions[:, None, :, None].expand(B, Hkv, T, G).reshape(B, -1)

        def attend(layer, q, k, v):  # each query sees positions <= its own (kernels/decode.py)
            k = self.rotary(k, positions[..., None])
            self.kv.load(layer, k.transpose(1, 2), v.transpose(1, 2), slots=torch.arange(first, last, device=dev))
            d = q.shape[-1]  # query rows ordered (KV head, token, group member), as the kernel wants
            rows = self.rotary(q, positions[..., None]).unflatten(2, (Hkv, G)).transpose(1, 2).reshape(B, -1, d)
            o = ops.positional_decode_attention(rows, self.kv.keys(layer), self.kv.values(layer),
                                                self.kv.seq_lens(last), q_pos, key_pos)
            return o.view(B, Hkv, T, G, d).transpose(1, 2).reshape(B, T, Hkv * G, d)

        model.forward(self.tokens[:, first:last], positions, attend)
