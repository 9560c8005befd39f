"""Dense decode, the baseline (FlashDecoding split-K): every query head
attends to the whole cache; read 2·S·d·b per KV head and layer plus q and o. With
``kv_dtype="int8"`` the cache is INT8 with fp16 scale and zero per row (d + 4 bytes per row).
With offload, FlexGen-style: every host row crosses PCIe every step."""
from __future__ import annotations

from kvsim.runtime.method import RuntimeMethod

from .spec import DenseSpec


class Dense(RuntimeMethod):
    spec_class = DenseSpec
