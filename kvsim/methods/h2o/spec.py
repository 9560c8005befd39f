"""H2O's parameters (arXiv 2306.14048): heavy and recent 0.1·S each (FMInference/H2O h2o_hf
scripts, --heavy_ratio / --recent_ratio)."""
from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import Field, model_validator

from ...models import ModelConfig
from ...workload import Workload
from ..spec import MethodSpec, require

DEFAULT_RATIO = 0.1  # --heavy_ratio / --recent_ratio in FMInference/H2O h2o_hf scripts


class H2OSpec(MethodSpec):
    name = "h2o"
    paper = "H2O: Heavy-Hitter Oracle for Efficient Generative Inference (arXiv 2306.14048)"
    summary = "keep heavy hitters by accumulated attention + a recent window, per KV head"

    heavy: Optional[int] = Field(None, description="heavy-hitter tokens kept per KV head (default floor(0.1·S))")
    recent: Optional[int] = Field(None, description="most recent tokens kept (default floor(0.1·S))")

    @model_validator(mode="after")
    def _in_range(self):
        for field in ("heavy", "recent"):
            value = getattr(self, field)
            require(value is None or value >= 0, f"h2o: {field} must be >= 0 tokens, got {value}")
        require(self.heavy is None or self.recent is None or self.heavy + self.recent >= 1,
                "h2o: heavy + recent must keep at least 1 token")
        return self

    def budgets(self, seq):
        """(heavy, recent) in tokens at context ``seq``."""
        derived = np.floor(DEFAULT_RATIO * np.asarray(seq, dtype=float))
        heavy = derived if self.heavy is None else np.asarray(float(self.heavy))
        recent = derived if self.recent is None else np.asarray(float(self.recent))
        return heavy, recent

    def cached_tokens(self, seq):
        """C: past tokens held per KV head."""
        heavy, recent = self.budgets(seq)
        return np.minimum(heavy + recent, np.asarray(seq, dtype=float) - 1.0)

    prefetchable = True  # heavy hitters from scores accumulated over earlier steps
    small_budget = {"heavy": 32, "recent": 32}

    def derived(self, model: ModelConfig, wl: Workload) -> dict:
        heavy, recent = self.budgets(wl.seq)
        return {"heavy": heavy, "recent": recent}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"heavy": seq, "recent": seq}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """Per KV head and layer: the G heads' fp32 weights written and read, the scores read and
        written, the eviction's scan of scores and positions and its write."""
        G = model.group
        return model.n_layers * batch * model.n_kv_heads * (2 * G * seq * 4 + 2 * seq * 4 + seq * 12 + 12)
