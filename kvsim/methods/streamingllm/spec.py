"""StreamingLLM's parameters (arXiv 2309.17453): 4 sink tokens and 2000 recent ones
(mit-han-lab/streaming-llm examples)."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ...models import ModelConfig
from ..spec import MethodSpec, require


class StreamingLLMSpec(MethodSpec):
    name = "streamingllm"
    paper = "Efficient Streaming Language Models with Attention Sinks (arXiv 2309.17453)"
    summary = "keep sink tokens + a recent window; keys re-rotated to cache positions each step"

    sink: int = Field(4, description="attention-sink tokens kept from the start (examples: 4)")
    recent: int = Field(2000, description="most recent tokens kept (examples: 2000)")

    @model_validator(mode="after")
    def _in_range(self):
        require(self.sink >= 0, f"streamingllm: sink must be >= 0 tokens, got {self.sink}")
        require(self.recent >= 0, f"streamingllm: recent must be >= 0 tokens, got {self.recent}")
        require(self.sink + self.recent >= 1, "streamingllm: sink + recent must keep at least 1 token")
        return self

    def cached_tokens(self, seq):
        """C: past tokens held per KV head."""
        return np.minimum(float(self.sink + self.recent), np.asarray(seq, dtype=float) - 1.0)

    prefetchable = True  # a fixed window
    small_budget = {"sink": 4, "recent": 60}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"recent": seq}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """Keys rotated on load: each cached row's int32 position and its cos/sin row (bf16), per
        layer (shared by the sequences); nothing with learned positions."""
        return 0.0 if model.learned_positions else model.n_layers * seq * (4 + model.head_dim * 2)
