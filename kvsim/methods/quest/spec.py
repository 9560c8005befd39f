"""Quest's parameters (Tang et al., arXiv 2406.10774; defaults and their sources: cost.py's
module doc): pages of 16 tokens, a 4096-token budget; layers 0–1 always dense."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from pydantic import Field

from ...models import ModelConfig
from ...workload import Workload
from ..spec import MethodSpec, require

DENSE_LAYERS = 2  # layers 0–1 dense (evaluation/quest_attention.py ``layer_id < 2``; paper §4.1)


class QuestSpec(MethodSpec):
    name: ClassVar[str] = "quest"
    paper: ClassVar[str] = "Quest, Tang et al. 2024, arXiv 2406.10774"
    summary: ClassVar[str] = "per-page min/max keys bound each page's score; attend to the top pages"

    page_size: int = Field(16, ge=1, description="tokens per page (P)")
    budget: int = Field(4096, ge=1, description="tokens attended per head (B), the current page included")

    def check(self, model: ModelConfig, wl: Workload) -> None:
        P, B = self.page_size, self.budget
        require(B % P == 0 and B >= 2 * P,
                f"quest: budget={B} must be a multiple of page_size={P} and at least two pages ({2 * P})")

    def pages(self, wl: Workload) -> np.ndarray:
        return np.ceil(wl.seq / self.page_size)

    kv_dtypes = ("same",)
    offload = True  # pages are read in place, host pages gathered
    small_budget = {"page_size": 16, "budget": 64}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"page_size": 16, "budget": max(math.ceil(seq / 16), 2) * 16}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """Per KV head and sparse layer, bf16: min/max metadata and page scores per page, the
        top-k's output, the page indices and q."""
        G, D, P = model.group, model.head_dim, self.page_size
        n = model.n_layers * batch * model.n_kv_heads
        return n * (seq / P * (2 * D * 2 + 2 * G * 2 + 4 + 8) + G * self.budget / P * 6 + G * D * 2)
