"""ALISA's parameters (arXiv 2403.17312; sources: cost.py's module doc): 80% KV sparsity,
16-bit KV (8: INT8 with a scale and zero point per row)."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ...errors import KvsimError
from ...models import ModelConfig
from ..spec import MethodSpec, require


class ALISASpec(MethodSpec):
    name = "alisa"
    paper = "ALISA: Accelerating LLM Inference via Sparsity-Aware KV Caching (arXiv 2403.17312)"
    summary = "sparse window attention: last k + top-k accumulated-score tokens per layer; INT8 KV option"

    sparsity: float = Field(0.8, description="KV sparsity 1 − r: share of tokens skipped (paper: 0.8)")
    kv_bits: int = Field(16, description="16: the workload's KV dtype; 8: INT8 channel-wise asymmetric KV")

    @model_validator(mode="after")
    def _in_range(self):
        require(0.0 <= self.sparsity < 1.0,
                f"alisa: sparsity must be in [0, 1) (1 keeps no token), got {self.sparsity}")
        require(self.kv_bits in (8, 16), f"alisa: kv_bits must be 8 or 16, got {self.kv_bits}")
        return self

    # ---- public helpers (kvsim.schedule uses them) -------------------------------------------
    def window(self, n):
        """k = round(n·r/2) with r = 1 − sparsity, rounded half up."""
        return np.floor(np.asarray(n, dtype=float) * (1.0 - self.sparsity) / 2.0 + 0.5)

    def local_tokens(self, n):
        """The last k positions, at least the new token itself, at most n."""
        return np.clip(self.window(n), 1.0, np.asarray(n, dtype=float))

    def global_tokens(self, n):
        """Top-k by accumulated score among the n − local older tokens."""
        n = np.asarray(n, dtype=float)
        return np.minimum(self.window(n), n - self.local_tokens(n))

    def selected_tokens(self, n):
        """Rows each KV head reads per step: local + global = 2k (n when 2k ≥ n)."""
        return self.local_tokens(n) + self.global_tokens(n)

    def kv_workload(self, wl):
        """The workload whose KV element type ALISA uses: int8 for kv_bits=8 (see module doc)."""
        if self.kv_bits == 8:
            if wl.kv_dtype == "fp8":
                raise KvsimError("alisa: kv_bits=8 is INT8 KV; it contradicts --kv-dtype fp8")
            return wl.with_(kv_dtype="int8")
        if "kv_bits" in self.model_fields_set and wl.b_kv < 2:
            raise KvsimError(f"alisa: kv_bits=16 contradicts --kv-dtype {wl.kv_dtype}; use kv_bits=8")
        return wl

    kv_dtypes = ("same", "int8")
    offload = True  # its global rows are gathered one by one, host rows too
    # the global set is the top-k of scores accumulated over earlier steps (arXiv 2403.17312 §4)
    prefetchable = True
    small_budget = {"sparsity": 0.95}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"sparsity": 0.0}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """Per layer and sequence: an int32 index per row and KV head, the accumulated fp32
        scores read and written, the weights of every query head written and read, the top-k."""
        return model.n_layers * batch * (model.n_kv_heads * seq * 4 + 2 * seq * 4
                                         + 2 * model.n_heads * seq * 4 + seq * 12)
