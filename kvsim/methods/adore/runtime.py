"""ADORE — adaptive token release with reconstruction (arXiv 2407.02328; code never published,
so everything past the paper's description is UNVERIFIED and chosen here).

Cache: m tokens per sequence, [B, Hkv, m, d] per layer, shared by all heads and layers.
Controller: a GRU over the token embeddings and an MLP of the GRU state plus a sinusoidal
position encoding give each token a score once, when it arrives (kvsim.methods.adore's form). Each step: the new token enters (the slot of the lowest-scored cached token
is released, or a free slot) and the top-R released tokens by score are reconstructed: their
K/V are recomputed through every layer together with the current token, so R+1 tokens go
through projections and MLP (weights read once) and attention is R+1 queries over m cached +
R+1 new keys (causal by position), one kernel: the chunk's K/V go to scratch rows after the m
cached ones and every query row sees the rows whose position is at most its own. Reconstructed
K/V are used in this step only.
Prefill: scores from the controller with a zero GRU state per token (the recurrence over a
long prompt is sequential); the m highest-scored prompt tokens are cached, the rest released.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kvsim.runtime import ops
from kvsim.runtime.cache import KVCache, num_splits
from kvsim.runtime.method import RuntimeMethod

from .spec import ADORESpec

HIDDEN = 256  # controller width, kvsim.methods.adore CONTROLLER_HIDDEN (UNVERIFIED choice)
PREFILL_CHUNK = 4096  # tokens per controller pass over the prompt


class Controller:
    """z_i = GRU(x_i, z_{i−1}) over the token embedding x_i; σ_i = sigmoid(MLP(p_i + z_i)) with a
    sinusoidal p_i (arXiv 1706.03762 §3.5) and a 256→256→1 ReLU MLP, as kvsim.methods.adore
    charges it. Seeded weights scaled by 1/sqrt(fan_in)."""

    def __init__(self, d_model: int, device, dtype, seed: int = 1234):
        gen = torch.Generator(device=device).manual_seed(seed)
        w = lambda o, i: (torch.randn(o, i, generator=gen, device=device) * i ** -0.5).to(dtype)  # noqa: E731
        self.w_ih, self.w_hh = w(3 * HIDDEN, d_model), w(3 * HIDDEN, HIDDEN)
        self.w1, self.w2 = w(HIDDEN, HIDDEN), w(1, HIDDEN)
        half = torch.arange(HIDDEN // 2, device=device, dtype=torch.float32)
        self.freq = 10000.0 ** (-2 * half / HIDDEN)

    def gru(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One GRU step, r = σ(W_ir x + W_hr h), z = σ(W_iz x + W_hz h),
        n = tanh(W_in x + r ⊙ W_hn h), h' = (1 − z) ⊙ n + z ⊙ h: read 3·h·(D + h) weights.
        torch.gru_cell: two matrix products and, on CUDA, one fused pointwise kernel."""
        shape = x.shape[:-1]
        out = torch.gru_cell(x.reshape(-1, x.shape[-1]), h.reshape(-1, HIDDEN), self.w_ih, self.w_hh)
        return out.reshape(*shape, HIDDEN)

    def score(self, z: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """σ of the prompt's states z [B, T, h] at ``pos`` [T], in torch on every device: kernel and
        reference runs then keep the same m prompt tokens (the step's kernel, kvsim/methods/adore/kernels.py,
        rounds in fp32 and would flip near-ties in that top-m)."""
        angle = pos.float()[..., None] * self.freq
        p = torch.cat([angle.sin(), angle.cos()], -1).to(z.dtype)
        return torch.sigmoid(F.linear(F.relu(F.linear(z + p, self.w1)), self.w2)[..., 0].float())


class ADORE(RuntimeMethod):
    spec_class = ADORESpec

    def allocate(self) -> None:
        s = self.spec
        self.m = m = min(self.p["m"], s.max_seq)  # rows ever cached
        self.kv = KVCache(s, rows=m + self.p["R"] + 1)  # + scratch rows for the step's chunk
        # position held by each cache row (−1: empty): the m slots, then the chunk's scratch rows
        self.k_pos = torch.full((s.batch, self.kv.rows), -1, dtype=torch.int32, device=s.device)
        self.slot_pos = self.k_pos[:, :m]  # a view: the attention's key positions need no copy
        self.slot_score = torch.full((s.batch, m), float("inf"), device=s.device)  # +inf: empty
        self.insert = torch.zeros(s.batch, dtype=torch.long, device=s.device)  # this step's slot
        self.tokens = torch.zeros(s.batch, s.max_seq, dtype=torch.long, device=s.device)
        self.score = torch.full((s.batch, s.max_seq), float("-inf"), device=s.device)
        # the released tokens' scores, −inf elsewhere: the reconstruction's top-R input, kept as
        # tokens are released, so each step's choice is one top-k over a contiguous row
        self.rebuild_score = torch.full((s.batch, s.max_seq), float("-inf"), device=s.device)
        self.count, self.ctrl, self.h = 0, None, None

    def side_tensors(self):
        return [self.tokens, self.score, self.rebuild_score, self.k_pos, self.slot_score]

    @property
    def released(self) -> torch.Tensor:
        """[B, S_max] bool: the positions released from the cache (scores are finite sigmoids)."""
        return torch.isfinite(self.rebuild_score)

    def begin_prefill(self, n, tokens, model):
        s = self.spec
        self.ctrl, self._embed = Controller(model.cfg.d_model, s.device, s.dtype), model.embed
        self.h = torch.zeros(s.batch, HIDDEN, device=s.device, dtype=s.dtype)
        self.tokens[:, :n] = tokens
        for first in range(0, n, PREFILL_CHUNK):
            last = min(n, first + PREFILL_CHUNK)
            x = model.embed[tokens[:, first:last]]
            h = self.ctrl.gru(x, torch.zeros(*x.shape[:-1], HIDDEN, device=s.device, dtype=s.dtype))
            self.score[:, first:last] = self.ctrl.score(h, torch.arange(first, last, device=s.device))
            self.h.copy_(h[:, -1])
        self.count = min(n, self.m)
        kept = self.score[:, :n].topk(self.count, dim=-1).indices.sort(-1).values
        self.slot_pos[:, : self.count] = kept
        self.slot_score[:, : self.count] = self.score.gather(1, kept)
        self.rebuild_score[:, :n] = self.score[:, :n]  # every prompt token released but the kept
        self.rebuild_score.scatter_(1, kept, float("-inf"))
        self._next_slot()

    def _next_slot(self) -> None:
        """The slot the next token takes: a free one, else the lowest-scored cached token's."""
        if self.count < self.m:
            self.insert.fill_(self.count)
        else:
            self.insert.copy_(self.slot_score.argmin(-1))

    def prefill(self, layer, k_raw, v):
        n = k_raw.shape[2]
        k = self.rotary(k_raw, torch.arange(n, device=k_raw.device))
        kept = self.slot_pos[:, None, : self.count, None].long().expand(-1, k.shape[1], -1, k.shape[-1])
        self.kv.load(layer, k.gather(2, kept), v.gather(2, kept))

    def prepare(self, tokens: torch.Tensor | None) -> torch.Tensor:
        """Controller step, insertion slot, reconstruction set and masks; returns chunk tokens."""
        B, n, dev = self.spec.batch, self.n, self.spec.device
        ids = tokens if tokens is not None else torch.zeros(B, dtype=torch.long, device=dev)
        h = self.ctrl.gru(self._embed[ids], self.h)
        if tokens is not None:  # in place: a captured graph reads and writes this one buffer
            self.h.copy_(h)
            self.tokens[:, n] = tokens
            c = self.ctrl  # σ straight into the score table, one kernel (kvsim/methods/adore/kernels.py)
            ops.adore_score(h, self.kv.seq_lens(n), c.freq, c.w1, c.w2, self.score[:, n])
        R = min(self.p["R"], n - self.count)  # released tokens so far: n − count
        rebuilt = self.rebuild_score.topk(R, dim=-1, sorted=False).indices  # [B,R] positions, any order
        m, s = self.m, self.spec
        # the chunk's positions (the rebuilt, then n) are the key positions of its scratch rows
        self.k_pos[:, m:m + R] = rebuilt
        self.k_pos[:, m + R] = n
        self.chunk_pos = self.k_pos[:, m:m + R + 1]  # [B,T] int32 view
        T = R + 1
        self.q_pos = self.chunk_pos[:, None, :, None].expand(B, s.n_kv_heads, T, s.group).reshape(B, -1)
        return torch.cat([self.tokens.gather(1, rebuilt), ids[:, None]], 1)

    def attend_chunk(self, layer, q, k, v, write: bool = True):
        """T = R+1 queries q [B,T,H,d] over the m cached rows and the chunk's own k, v [B,T,Hkv,d],
        written into the scratch rows m..m+T−1: one kernel, each query seeing positions ≤ its own
        (kernels/decode.py positional_decode_attention)."""
        B, T, H, d = q.shape
        m, Hkv, G = self.m, self.spec.n_kv_heads, H // self.spec.n_kv_heads
        keys, values = self.kv.keys(layer), self.kv.values(layer)
        # rotated k straight into the scratch rows, rotated q straight into the kernel's row
        # order (KV head, token, group member): one RoPE kernel each, no reorder copies
        self.rotary(k, self.chunk_pos[..., None], out=keys[:, :, m:m + T].transpose(1, 2))
        values[:, :, m:m + T] = v.transpose(1, 2)  # write 2·T·d·b with the keys
        rows = torch.empty(B, Hkv * T * G, d, dtype=q.dtype, device=q.device)
        self.rotary(q.unflatten(2, (Hkv, G)), self.chunk_pos[..., None, None],
                    out=rows.view(B, Hkv, T, G, d).transpose(1, 2))
        o = ops.positional_decode_attention(rows, keys, values, self.kv.seq_lens(m + T), self.q_pos,
                                            self.k_pos, num_splits=num_splits(B, Hkv, m + T, dense=True))
        o = o.view(B, Hkv, T, G, d).transpose(1, 2).reshape(B, T, H, d)
        if write:
            self.kv.put(layer, self.insert[:, None], keys[:, :, m + T - 1], v[:, -1])
        return o

    def decode_step(self, model, tokens):
        if self.n + 1 > self.spec.max_seq:
            raise ValueError(f"context {self.n + 1} exceeds max_seq {self.spec.max_seq}")
        chunk = self.prepare(tokens)
        logits = model.forward(chunk, self.chunk_pos, self.attend_chunk)
        if self.count == self.m:  # release, insert and the next slot: one kernel (kvsim/methods/adore/kernels.py)
            ops.adore_release(self.slot_pos, self.slot_score, self.rebuild_score, self.score,
                              self.insert, self.n)
        else:  # a free slot: the cache is still filling
            self.slot_pos[:, self.count] = self.n
            self.slot_score[:, self.count] = self.score[:, self.n]
            self.count += 1
            self._next_slot()
        self.n += 1
        return logits

    def attention_only(self, q):
        self.prepare(None)
        B, T = self.chunk_pos.shape
        s = self.spec
        qq = q[:, None].expand(B, T, -1, -1)
        kv = torch.zeros(B, T, s.n_kv_heads, s.head_dim, dtype=q.dtype, device=q.device)
        o = q
        for layer in range(s.n_layers):
            o = self.attend_chunk(layer, qq, kv, kv, write=False)[:, -1]
        return o
