"""Dense decode, the baseline (FlashDecoding split-K; FlashInfer-style): no parameters."""
from __future__ import annotations
from ..spec import MethodSpec


class DenseSpec(MethodSpec):
    name = "dense"
    paper = "FlashDecoding (Dao et al. 2023) split-K decode; the baseline"
    summary = "full attention over the whole KV cache"
    kv_dtypes = ("same", "int8")
    offload = True  # FlexGen-style: every host row crosses PCIe every step
    prefetchable = True  # it reads every row it holds
