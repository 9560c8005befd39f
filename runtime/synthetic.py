"""Synthetic attention scores for the prefill of score-keeping methods (H2O's heavy hitters,
ALISA's accumulated scores): the prompt's real queries are not run, one seeded query per head
stands in for them."""
from __future__ import annotations

import torch

from . import ops


def synthetic_scores(k: torch.Tensor, group: int, seed: int, sum_heads: bool = False,
                     seqs: slice = slice(None), batch: int | None = None) -> torch.Tensor:
    """Attention probabilities of one seeded random query per query head over keys
    k [B,Hkv,n,d], summed over each group ([B,Hkv,n]) or over all heads ([B,n]). ``k`` may hold
    the sequences ``seqs`` of a ``batch`` (a prefill pass): their queries are those of the whole
    batch's draw, so a prefill in passes scores as one pass does."""
    B, Hkv, n, d = k.shape
    gen = torch.Generator(device=k.device).manual_seed(seed)
    q = torch.randn(batch or B, Hkv * group, d, generator=gen, device=k.device)[seqs].to(k.dtype)
    lens = torch.full((B,), n, dtype=torch.int32, device=k.device)
    _, probs = ops.attention_with_probs(q, k, k, lens)
    probs = probs.reshape(B, Hkv, group, n).sum(2)
    return probs.sum(1) if sum_heads else probs
