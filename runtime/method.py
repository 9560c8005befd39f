"""What every runtime method shares; its defaults are dense decode (kvsim/methods/dense/runtime.py).

A method owns its cache. Per decode step at position n (n tokens already cached):
``begin_step`` (per-step selection/scoring), then for each layer ``write`` the new token's K/V
and ``read`` (attention for the current token), then ``end_step``. Keys are cached after RoPE
at their true positions unless a method says otherwise (StreamingLLM). Prefill is synthetic:
``prefill`` gets pre-RoPE keys and values [B, Hkv, n, d] for positions 0..n-1 of one layer.
"""
from __future__ import annotations

import torch

from kvsim.methods import names_with
from kvsim.methods.spec import MethodSpec

from .cache import CacheSpec, KVCache
from .transfers import PcieCounter


class RuntimeMethod:
    """A method's runtime half; ``spec_class`` (the method's spec.py) gives its name and
    capabilities: KV dtypes, and offload (attention reaches the cache only through
    KVCache.attend_*/rows_of)."""
    spec_class: type[MethodSpec]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.name = cls.spec_class.name
        cls.kv_dtypes = cls.spec_class.kv_dtypes

    def __init__(self, spec: CacheSpec, params: dict, rotary, counter: PcieCounter | None = None):
        if spec.offload > 0 and not self.spec_class.offload:
            raise ValueError(f"{self.name}: offload is not supported (its cache layout is not "
                             f"position-ordered); use {', '.join(names_with('offload'))}")
        self.spec, self.p, self.rotary = spec, dict(params), rotary
        self.counter = counter or PcieCounter()
        self.n = 0  # tokens cached before the current step (= the current token's position)
        self.check()
        self.allocate()

    # ---- overridable --------------------------------------------------------------------------
    def check(self) -> None:
        if self.spec.kv_dtype not in self.kv_dtypes:
            raise ValueError(f"{self.name}: kv_dtype {self.spec.kv_dtype!r} not supported; "
                             f"choose one of: {', '.join(self.kv_dtypes)}")

    def allocate(self) -> None:
        self.kv = KVCache(self.spec, counter=self.counter)

    def begin_prefill(self, n: int, tokens: torch.Tensor, model) -> None:
        """Called once before the per-layer ``prefill``; ``tokens`` [B, n] synthetic ids."""

    def prefill(self, layer: int, k_raw: torch.Tensor, v: torch.Tensor) -> None:
        n = k_raw.shape[2]
        self.store_prefill(layer, self.rotary(k_raw, torch.arange(n, device=k_raw.device)), v)

    def store_prefill(self, layer: int, k: torch.Tensor, v: torch.Tensor, seqs: slice = slice(None)) -> None:
        """The prompt's rows [0, n) of layer ``layer``, k and v [b, Hkv, n, d] for the sequences
        ``seqs`` of the batch (a prefill in passes over part of it: runtime/schedule_exec.py)."""
        self.kv.load(layer, k, v, seqs=seqs)

    def finish_prefill(self, n: int) -> None:
        self.n = n

    def begin_step(self, tokens: torch.Tensor | None) -> None:
        """Per-step work shared by all layers; ``tokens`` [B] (None in attention-only steps)."""

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v [B, Hkv, d] pre-RoPE for position n; write 2·d·b per KV head."""
        self.store_row(layer, self.n, self.rotary(k, self.n), v)

    def store_row(self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.kv.put(layer, pos, k, v)

    def read(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q [B, H, d] pre-RoPE -> attention output [B, H, d] over the n + 1 cached tokens;
        offloaded, the next layer's host rows start moving now (it reads them all too), behind
        this layer's own (the first layer starts its own here: a step prefetches nothing for the
        next one, so every copy it starts ends inside it)."""
        self.prefetch_blocks(layer)
        return self.kv.attend_all(layer, self.rotary(q, self.n), self.n + 1)

    def reads_every_row(self, layer: int) -> bool:
        """Whether ``read(layer)`` of the current step attends to every cached row (dense: all)."""
        return True

    def prefetch_blocks(self, layer: int) -> None:
        """Offloaded: a layer that reads every row fetches its host block on the copy stream,
        layer 0's when it attends, a later one's while the layer before it attends (called at
        the start of every ``read``; the blocks issued are exactly those the step reads)."""
        if layer == 0 and self.reads_every_row(0):
            self.kv.prefetch(0)
        if layer + 1 < self.spec.n_layers and self.reads_every_row(layer + 1):
            self.kv.prefetch(layer + 1)

    def end_step(self) -> None:
        self.n += 1

    # ---- shared -------------------------------------------------------------------------------
    def attend(self, layer: int, q, k, v) -> torch.Tensor:
        """The decoder's callback for one token: q [B,1,H,d], k/v [B,1,Hkv,d]."""
        if q.shape[1] != 1:
            raise ValueError(f"{self.name} decodes one token per step, got {q.shape[1]}")
        self.write(layer, k[:, 0], v[:, 0])
        return self.read(layer, q[:, 0])[:, None]

    def decode_step(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B] at position n -> logits [B, V] fp32."""
        if self.n + 1 > self.spec.max_seq:
            raise ValueError(f"context {self.n + 1} exceeds max_seq {self.spec.max_seq}")
        self.begin_step(tokens)
        positions = torch.full((tokens.shape[0], 1), self.n, dtype=torch.long, device=tokens.device)
        logits = model.forward(tokens[:, None], positions, self.attend)
        self.end_step()
        return logits

    def attention_only(self, q: torch.Tensor) -> torch.Tensor:
        """Attention of q [B, H, d] at position n in every layer (selection and scoring
        included; no projections, MLP or cache write; n does not advance)."""
        self.begin_step(None)
        o = q
        for layer in range(self.spec.n_layers):
            o = self.read(layer, q)
        return o

    @property
    def device_bytes(self) -> int:
        return self.kv.device_bytes + sum(t.numel() * t.element_size() for t in self.side_tensors())

    @property
    def host_bytes(self) -> int:
        return self.kv.host_bytes

    def side_tensors(self) -> list[torch.Tensor]:
        """Method structures beside K/V (scores, metadata, copies), for memory accounting."""
        return []
