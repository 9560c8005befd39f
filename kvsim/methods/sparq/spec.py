"""SparQ Attention's parameters (Ribar et al., arXiv 2312.04985; defaults: cost.py's module doc).
r = d/8 and k = S/16 (compression ratio 8 of sparq-gpt-fast), local = k/4 (the paper's sweeps)."""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from pydantic import Field

from ...models import ModelConfig
from ...workload import Workload
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES
from ..spec import MethodSpec, require

COMPRESSION = 8  # sparq-gpt-fast RKForCompressionRatio(ratio=8)
LOCAL_FRACTION = 0.25  # local = k/4, the paper's sweeps


class SparQSpec(MethodSpec):
    name: ClassVar[str] = "sparq"
    paper: ClassVar[str] = "SparQ Attention, Ribar et al. 2023, arXiv 2312.04985"
    summary: ClassVar[str] = "approximate scores from r components of q, exact attention on the top-k rows"

    r: Optional[int] = Field(None, ge=1, description="components of q used for approximate scores (default d/8)")
    k: Optional[int] = Field(None, ge=1, description="rows gathered for exact attention (default S/16, per context)")
    local: Optional[int] = Field(None, ge=0, description="most recent rows always among the k (default k/4)")

    def rank(self, model: ModelConfig) -> int:
        return self.r if self.r is not None else max(round(model.head_dim / COMPRESSION), 1)

    def rows(self, wl: Workload) -> np.ndarray:
        if self.k is not None:
            return np.asarray(float(self.k))
        return np.maximum(np.round(wl.seq / (2 * COMPRESSION)), 1.0)

    def local_rows(self, wl: Workload) -> np.ndarray:
        if self.local is not None:
            return np.asarray(float(self.local))
        return np.floor(self.rows(wl) * LOCAL_FRACTION)

    def check(self, model: ModelConfig, wl: Workload) -> None:
        require(self.rank(model) <= model.head_dim,
                f"sparq: r={self.rank(model)} exceeds the head dim {model.head_dim}; choose 1..{model.head_dim}")
        require(self.rows(wl) <= wl.seq,
                f"sparq: k={self.k} exceeds the context ({int(np.min(wl.seq))} tokens); choose k <= context")
        require(self.local_rows(wl) <= self.rows(wl),
                f"sparq: local={self.local} exceeds k; choose 0 <= local <= k")

    kv_dtypes = ("same",)
    offload = True  # the k rows are gathered one by one, host rows too
    small_budget = {"k": 64, "local": 16}

    def derived(self, model: ModelConfig, wl: Workload) -> dict:
        return {"r": self.rank(model), "k": self.rows(wl), "local": self.local_rows(wl)}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"r": model.head_dim, "k": seq}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """Per KV head and layer, bf16 K and activations (cost.py's module doc): the approximate
        scores' reads S·r·b; their fp32 logits, softmax and group sum (3·G + 2)·S·4, read by the
        top-k; per chosen row its value and index, ŝ of G heads, and the index read twice; q, o,
        v̄ and the step-1 outputs."""
        G, D, r = model.group, model.head_dim, self.rank(model)
        k = self.rows(Workload(seq=seq))
        n = model.n_layers * batch * model.n_kv_heads
        per_row = r * 2 + (3 * G + 2) * SCORE_BYTES
        per_chosen = G * SCORE_BYTES + SCORE_BYTES + 3 * INDEX_BYTES
        return n * (seq * per_row + k * per_chosen + 3 * G * D * 2 + 10 * D + 8 * G + r * (10 + 2 * G))
