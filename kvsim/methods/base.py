"""The interface every method shares: a frozen pydantic model of its parameters with ``cost``.

A method overrides ``attention_ops`` (attention over the cache, with its selection and scoring
work), ``cache_ops`` (per-step cache maintenance), and ``kv_resident`` (what it keeps, where);
the rest of the decoder step is the dense model's (``kvsim.decoder``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..cost import Cost, Op, Resident
from ..decoder import activation_bytes, layer_ops, model_ops, weight_bytes
from ..errors import KvsimError
from ..hardware import HardwareProfile
from ..models import ModelConfig
from ..units import UnitError, parse_tokens
from ..workload import Workload
from .attention import (contiguous_target, decode_attention, full_kv_bytes, kv_append, kv_row_bytes,
                        query_rope)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @field_validator("*", mode="before")
    @classmethod
    def _token_sizes(cls, value, info):
        """Integer parameters accept token sizes: k=2k means 2048."""
        annotation = str(cls.model_fields[info.field_name].annotation)
        if isinstance(value, str) and "int" in annotation and value[-1:].lower() in "km":
            try:
                return parse_tokens(value)
            except UnitError:
                return value
        return value

    # ---- what a method overrides -------------------------------------------------------------
    def check(self, model: ModelConfig, wl: Workload) -> None:
        """Raise KvsimError when a parameter does not suit this model or context."""

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
                Resident("activations", gpu=activation_bytes(model, wl, tokens)),
                Resident("workspace", gpu=hw.workspace_bytes.value)]

    def prefill_cost(self, model: ModelConfig, hw: HardwareProfile, wl: Workload) -> Cost:
        """Processing a ``wl.seq``-token prompt (dense, flash-attention style, causal)."""
        from .prefill import dense_prefill
        return dense_prefill(self, model, hw, wl)

    @classmethod
    def parameters(cls) -> list[tuple[str, object, str]]:
        """(name, default, description) of each parameter, for ``kvsim methods``."""
        return [(name, "derived" if f.default is None else f.default, f.description or "")
                for name, f in cls.model_fields.items()]

    @classmethod
    def from_params(cls, params: dict) -> "Method":
        unknown = sorted(set(params) - set(cls.model_fields))
        if unknown:
            valid = ", ".join(cls.model_fields) or "none"
            raise KvsimError(f"{cls.name}: unknown parameter '{unknown[0]}'; valid: {valid}")
        try:
            return cls(**params)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(map(str, err["loc"]))
            raise KvsimError(f"{cls.name}: parameter {field}={params.get(field, '')!r}: {err['msg']}") from None


def require(condition, message: str) -> None:
    """Raise a person-facing error unless ``condition`` holds everywhere (arrays allowed)."""
    if not np.all(condition):
        raise KvsimError(message)
