"""ADORE's parameters (arXiv 2407.02328): no published defaults; m = 2048 cached tokens,
R = 8 released tokens rebuilt per step."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ...models import ModelConfig
from ...kernel_contract import split_count
from ..spec import MethodSpec, require


class ADORESpec(MethodSpec):
    name = "adore"
    paper = "Efficient Sparse Attention needs Adaptive Token Release (arXiv 2407.02328)"
    summary = "m-token cache, controller releases the lowest-scored token; top-R released rebuilt each step"

    m: int = Field(2048, description="tokens the KV cache holds (no published default)")
    R: int = Field(8, description="released tokens reconstructed per step (no published default)")

    @model_validator(mode="after")
    def _in_range(self):
        require(self.m >= 1, f"adore: m must be >= 1 token, got {self.m}")
        require(self.R >= 0, f"adore: R must be >= 0 tokens, got {self.R}")
        return self

    # ---- token counts ------------------------------------------------------------------------
    def cached_tokens(self, seq):
        return np.minimum(float(self.m), np.asarray(seq, dtype=float) - 1.0)

    def released_tokens(self, seq):
        return np.maximum(np.asarray(seq, dtype=float) - 1.0 - self.m, 0.0)

    def reconstructed_tokens(self, seq):
        return np.minimum(float(self.R), self.released_tokens(seq))

    prefetchable = True  # a cache the controller chose the step before
    small_budget = {"m": 64, "R": 2}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"m": seq, "R": 0}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """R more queries per head (q, o, and the wider split policy's partials each), the R+1
        outputs reordered for the O projection, and the release and selection of the rebuilt."""
        L, H, d, R = model.n_layers, model.n_heads, model.head_dim, self.R
        splits = split_count(batch, model.n_kv_heads, np.inf)
        per_query = 3 * d * 2 + 2 * splits * (d + 2) * 4
        reorder = L * batch * H * (R + 1) * 2 * d * 2
        return L * batch * H * R * per_query + batch * (seq * 4 + R * 8) + reorder
