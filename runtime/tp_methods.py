"""What each tensor-parallel rank keeps of a method's state (runtime/tp.py runs the method on the
rank's Hkv/N KV heads and their H/N query heads). Chosen so that N ranks decode exactly what one
GPU decodes; kvsim's TP cost model charges the same collectives (kvsim/decoder.py,
``Method.tp_ops``).

- Per-head state is sharded with its heads, no communication: dense, Quest (page min/max),
  SparQ (d-major K copy, running sum of V per KV head), TidalDecode (top-k per query head),
  H2O (scores summed over the G query heads of a KV head, all on one rank), StreamingLLM.
- ALISA: one global set per layer from scores summed over all heads (§4.2). Each rank adds its
  heads' weights at the 2k selected positions into a [B, 2k] fp32 row, one all-reduce of B·2k·4
  bytes per layer sums the ranks, and every rank adds the sum to its copy of the layer's score
  vector: all ranks keep the same [B, S_max] scores and select the same tokens.
- ADORE: the controller scores tokens, not heads; every rank runs it (same seeded weights, same
  token embeddings) and keeps the same scores, cached set and reconstruction choice. Its input
  is an embedding lookup of its own, vocabulary-parallel: one more all-reduce of B·D·b per step.
- DuoAttention: the single-GPU runtime's retrieval heads are the first ⌈ρ·Hkv⌉ KV heads. Heads
  of a layer can be placed on any rank (their Q/K/V rows and o_proj columns go with them), so
  KV head i goes to rank i mod N: each rank holds ⌈ρ·Hkv⌉/N of the retrieval heads (±1), its
  retrieval heads first, as kvsim's cost model assumes (ρ of each GPU's KV heads). Contiguous
  blocks would put them all on the first ranks, and every step would wait for those.
- The synthetic prefill scores (H2O's heavy hitters, ALISA's initial scores) come from one seeded
  query per head over all heads' keys: a rank gathers the prompt keys of every head (prefill
  only, not timed) to compute the same stand-in; a real prefill's attention gives each rank its
  own heads' scores, and ALISA's sum over heads one all-reduce of B·S·4 bytes per layer.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch

from . import ops
from .registry import METHODS

SCORES_FUNCTION = "synthetic_scores"  # the name a method's store_prefill calls for prompt scores


@functools.lru_cache(maxsize=None)
def _alisa_class():
    base = METHODS["alisa"]

    class TensorParallelALISA(base):
        """ALISA.read with the score update summed over the ranks (module doc)."""

        def allocate(self) -> None:
            super().allocate()
            # flat, so that its first B·2k entries are one contiguous [B, 1, 2k] row (collectives
            # take contiguous tensors)
            self.increment = torch.zeros(self.spec.batch * self.spec.max_seq, dtype=torch.float32,
                                         device=self.spec.device)

        def side_tensors(self):
            return super().side_tensors() + [self.increment]

        def read(self, layer, q):
            q = self.rotary(q, self.n)
            idx = self.select(layer, self.n + 1)
            B, K = idx.shape
            rows = idx[:, None, :].expand(B, self.spec.n_kv_heads, K).int()
            counts = self.kv.seq_lens(K)[:, None].expand(B, self.spec.n_kv_heads)
            o, lse, logits = self.kv.attend_indices(layer, q, rows, counts, logits=True)
            inc = self.increment[: B * K].view(B, 1, K).zero_()  # this rank's heads' weights, list order
            ops.accumulate_weights(logits, lse, inc, self.kv.seq_lens(K), self.spec.n_heads)
            self.comm.all_reduce(inc)  # B·2k·4 bytes
            self.acc[layer].scatter_add_(1, idx, inc[:, 0])
            return o

    return TensorParallelALISA


def kv_head_layout(name: str, n_kv_heads: int, world: int) -> list[list[int]]:
    """The global KV heads of each rank, in the rank's order: contiguous blocks, DuoAttention's
    dealt round-robin (module doc)."""
    if name == "duoattention":
        return [list(range(rank, n_kv_heads, world)) for rank in range(world)]
    per_rank = n_kv_heads // world
    return [list(range(rank * per_rank, (rank + 1) * per_rank)) for rank in range(world)]


def shard_params(name: str, params: dict, kv_heads: list[int], full_cfg) -> dict:
    """The rank's parameter values: DuoAttention's ratio of retrieval heads among ``kv_heads``
    (the rank's global heads; the first ⌈ρ·Hkv⌉ of the model retrieve)."""
    if name != "duoattention":
        return params
    retrieval = min(full_cfg.n_kv_heads, math.ceil(params["retrieval_ratio"] * full_cfg.n_kv_heads - 1e-9))
    mine = sum(1 for head in kv_heads if head < retrieval)
    if kv_heads[:mine] != [head for head in kv_heads if head < retrieval]:
        raise ValueError("duoattention: a rank's retrieval heads must come first in its order")
    return {**params, "retrieval_ratio": mine / len(kv_heads)}


def tp_method(name: str, spec, params: dict, rotary, counter, comm, full_cfg, layout):
    """The method object of one rank, with ``comm`` for its collectives."""
    cls = _alisa_class() if name == "alisa" else METHODS[name]
    method = cls(spec, shard_params(name, params, layout[comm.rank], full_cfg), rotary, counter)
    method.comm = comm
    return method


@contextlib.contextmanager
def gathered_prefill_scores(method, comm, layout):
    """While prefilling: the method's synthetic prompt scores computed over every rank's keys,
    this rank's heads (or the sum over all heads) kept (module doc)."""
    scope = type(method).store_prefill.__globals__
    original = scope.get(SCORES_FUNCTION)
    if original is None:
        yield
        return
    mine = layout[comm.rank]

    def gathered(k, group, seed, sum_heads=False):
        scores = original(comm.gather_heads(k, 1, layout), group, seed, sum_heads=sum_heads)
        return scores if sum_heads else scores[:, mine].contiguous()

    scope[SCORES_FUNCTION] = gathered
    try:
        yield
    finally:
        scope[SCORES_FUNCTION] = original
