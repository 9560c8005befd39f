"""Dense decode: every query head attends to the whole cache (FlashDecoding / FlashInfer-style
split-K decode). Reads K and V once: 2·S·d·b per KV head and layer,
plus q and o. No parameters."""
from __future__ import annotations

from typing import ClassVar

from ..base import Method
from .spec import DenseSpec


class Dense(DenseSpec, Method):

    prefetches_blocks: ClassVar[bool] = True  # offloaded: a layer's block is fetched while the one before runs

    def host_rows_read(self, model, wl, host):
        """Offloaded (kvsim.offload): every layer reads all H host rows of each KV head, as one
        block: (block rows, gathered rows)."""
        return model.n_layers * model.n_kv_heads * host, 0.0
