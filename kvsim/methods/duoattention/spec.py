"""DuoAttention's parameters (Xiao et al., arXiv 2410.10819; sources: cost.py's module doc):
retrieval ratio 0.25 (MHA) / 0.5 (GQA), sink 64, recent 256."""
from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from ...models import ModelConfig
from ...workload import Workload
from ..spec import MethodSpec, require

RATIO_MHA, RATIO_GQA = 0.25, 0.5  # paper: Llama-2-7B-32K (MHA) 25%, Llama-3-8B (GQA) 50%
PREFILL_CHUNK = 32000  # tokens per prefill chunk (scripts/efficiency.sh --prefilling_chunk_size)


class DuoAttentionSpec(MethodSpec):
    name: ClassVar[str] = "duoattention"
    paper: ClassVar[str] = "DuoAttention, Xiao et al. 2024, arXiv 2410.10819"
    summary: ClassVar[str] = "retrieval heads keep the full cache, streaming heads sink + recent tokens"

    retrieval_ratio: Optional[float] = Field(None, ge=0.0, le=1.0,
                                             description="fraction of KV heads that retrieve (default 0.25 MHA, 0.5 GQA)")
    sink: int = Field(64, ge=0, description="first tokens a streaming head keeps")
    recent: int = Field(256, ge=0, description="last tokens a streaming head keeps")

    def ratio(self, model: ModelConfig) -> float:
        if self.retrieval_ratio is not None:
            return self.retrieval_ratio
        return RATIO_GQA if model.group > 1 else RATIO_MHA

    @property
    def window(self) -> int:
        return self.sink + self.recent

    def check(self, model: ModelConfig, wl: Workload) -> None:
        require(1 <= self.window <= PREFILL_CHUNK,
                f"duoattention: sink + recent = {self.window} must lie in 1..{PREFILL_CHUNK}")

    prefetchable = True  # fixed windows and whole caches
    small_budget = {"retrieval_ratio": 0.25, "sink": 16, "recent": 64}

    def derived(self, model: ModelConfig, wl: Workload) -> dict:
        return {"retrieval_ratio": self.ratio(model)}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"retrieval_ratio": 1.0}
