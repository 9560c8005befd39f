"""TidalDecode's parameters (Yang et al., arXiv 2410.05076; sources: cost.py's module doc):
k = 256 tokens per query head, re-selection at layer 13, no KV-cache correction."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from ...models import ModelConfig
from ...workload import Workload
from ...kernel_contract import INDEX_BYTES, SCORE_BYTES
from ..spec import MethodSpec, require

DENSE_LAYERS = 2  # layers 0–1 dense (tidal/models/llama.py)
SELECTION_LAYER = 2  # layer 2: dense + selection (--sparse_layer_start 2)
SELECTION_LAYERS = 2  # layer 2 and the re-selection layer


class TidalDecodeSpec(MethodSpec):
    name: ClassVar[str] = "tidaldecode"
    paper: ClassVar[str] = "TidalDecode, Yang et al. 2024, arXiv 2410.05076"
    summary: ClassVar[str] = "two selection layers pick top-k tokens by logits; other layers reuse them"

    k: int = Field(256, ge=1, description="tokens selected per query head (the current token is added)")
    reselect_layer: int = Field(13, ge=0, description="layer that attends densely and selects again")
    correction_period: int = Field(0, ge=0, description="steps between KV-cache corrections (0: off)")

    def check(self, model: ModelConfig, wl: Workload) -> None:
        L = model.n_layers
        require(SELECTION_LAYER < self.reselect_layer < L,
                f"tidaldecode: reselect_layer={self.reselect_layer} must lie in "
                f"{SELECTION_LAYER + 1}..{L - 1} for {model.name} ({L} layers)")

    def selected(self, wl: Workload) -> np.ndarray:
        """Tokens the top-k picks per query head: k, at most the S − 1 earlier tokens."""
        return np.minimum(float(self.k), wl.seq - 1.0)

    kv_dtypes = ("same",)
    offload = True  # dense/selection layers take the host block, sparse ones gather (correction_period 0)
    small_budget = {"k": 32}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict:
        return {"k": seq}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """In the two selection layers the fp32 logits written and read by the top-k, its picks
        (value and index); in the sparse layers, the union of the G lists beyond S (worst case)
        and the indices. bf16 K/V."""
        G, D, k, L = model.group, model.head_dim, self.k, model.n_layers
        heads = batch * model.n_kv_heads
        select = SELECTION_LAYERS * heads * G * (2 * seq * SCORE_BYTES + k * (SCORE_BYTES + INDEX_BYTES))
        beyond = np.maximum(G * (k + 1) - seq, 0)
        return select + (L - DENSE_LAYERS - SELECTION_LAYERS) * heads * (beyond * 2 * D * 2 + G * k * INDEX_BYTES)
