"""The cost interface every method shares: its spec (kvsim.methods.spec) with ``cost``.

A method overrides ``attention_ops`` (attention over the cache, with its selection and scoring
work), ``cache_ops`` (per-step cache maintenance), and ``kv_resident`` (what it keeps, where);
the rest of the decoder step is the dense model's (``kvsim.decoder``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ..cost import Cost, Op, Resident
from ..decoder import activation_bytes, layer_ops, model_ops, rope_table_bytes, weight_bytes
from ..hardware import HardwareProfile
from ..models import ModelConfig
from ..workload import Workload
from .spec import MethodSpec
from .attention import (contiguous_target, decode_attention, full_kv_bytes, kv_append, kv_row_bytes,
                        query_rope)


def prompt_layer_bytes(model: ModelConfig, wl: Workload):
    """One layer's keys (or values) of the whole prompt in the activation dtype: B·Hkv·S·d·b_a."""
    return wl.batch * model.n_kv_heads * wl.seq * model.head_dim * wl.b_a


class Method(MethodSpec):
    """A method's cost: its spec's parameters with the ops of one decode step."""

    # ---- what a method overrides -------------------------------------------------------------
    def kv_workload(self, wl: Workload) -> Workload:
        """The workload whose KV element type the method stores (ALISA kv_bits=8: int8)."""
        return wl

    def row_bytes(self, model: ModelConfig, wl: Workload) -> float:
        """One token's K and V for one KV head, as the method stores them."""
        return kv_row_bytes(model, self.kv_workload(wl))

    rotates_new_keys: ClassVar[bool] = True  # False: keys cached before RoPE (StreamingLLM)
    positions_tensor: ClassVar[bool] = True  # the runtime's step builds a positions tensor and a view

    def attention_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        """Attention over the cache; its query's RoPE is added by ``query_ops``."""
        return decode_attention("layers/attn/decode", model, wl, rows=wl.seq, layers=model.n_layers,
                                target=contiguous_target(wl))

    def query_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        """The query's RoPE at the start of attention, in every layer."""
        return query_rope(model, wl)

    def cache_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        return [kv_append(model, wl)]

    def kv_resident(self, model: ModelConfig, wl: Workload) -> list[Resident]:
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl), kv=True)]

    def extra_ops(self, model: ModelConfig, wl: Workload) -> list[Op]:
        """Work outside attention that the method adds (e.g. ADORE's reconstruction)."""
        return []

    def tp_ops(self, model: ModelConfig, wl: Workload, gpus: int) -> list[Op]:
        """Collectives the method adds on each of ``gpus`` tensor-parallel GPUs (``model`` the
        full model), beyond the decoder's (kvsim.decoder.tensor_parallel_ops)."""
        return []

    def tokens_through_layers(self, model: ModelConfig, wl: Workload):
        """Tokens per sequence that go through the projections and MLP in one decode step."""
        return 1.0

    # ---- shared ------------------------------------------------------------------------------
    def cost(self, model: ModelConfig, hw: HardwareProfile, wl: Workload) -> Cost:
        """One decode step of the whole model."""
        self.check(model, wl)
        tokens = self.tokens_through_layers(model, wl)
        head, *tail = model_ops(model, wl, tokens=tokens)
        if not self.positions_tensor:
            head = replace(head, torch_calls=head.torch_calls - 1, torch_host_calls=head.torch_host_calls - 1)
        ops = [head, *layer_ops(model, wl, tokens=tokens, rotate_keys=self.rotates_new_keys),
               *self.cache_ops(model, wl), *self.query_ops(model, wl), *self.attention_ops(model, wl),
               *self.extra_ops(model, wl), *tail]
        return Cost(tuple(ops), tuple(self.base_resident(model, hw, wl, tokens)
                                      + self.kv_resident(model, wl)))

    def base_resident(self, model, hw, wl, tokens=1.0) -> list[Resident]:
        return [Resident("weights", gpu=weight_bytes(model, wl)),
                Resident("rope_tables", gpu=rope_table_bytes(model, wl, self.rope_positions(wl))),
                Resident("activations", gpu=activation_bytes(model, wl, tokens)),
                Resident("workspace", gpu=hw.workspace_bytes.value)]

    def rope_positions(self, wl: Workload):
        """Positions the RoPE tables cover: every one up to the context."""
        return wl.seq

    def prefill_scratch(self, model: ModelConfig, wl: Workload):
        """Bytes a prefill of ``wl.seq`` prompt tokens holds beside the allocated cache while it
        writes one layer: that layer's pre-RoPE keys, values and rotated keys of the prompt,
        B·Hkv·S·d·b_a each (1.5 × one layer's K and V). Keys cached before RoPE skip the
        rotated copy."""
        copies = 3 if self.rotates_new_keys and not model.learned_positions else 2
        return copies * prompt_layer_bytes(model, wl)

    def prefill_cost(self, model: ModelConfig, hw: HardwareProfile, wl: Workload) -> Cost:
        """Processing a ``wl.seq``-token prompt (dense, flash-attention style, causal)."""
        from .prefill import dense_prefill
        return dense_prefill(self, model, hw, wl)
