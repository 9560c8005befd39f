"""What a method is, apart from what it costs or how it runs: its parameters with their defaults
(derived ones too), what it can do, an example budget, and its paper.

Each method's ``spec.py`` subclasses ``MethodSpec``; its cost model (``cost.py``) and its runtime
(each method's runtime.py) both read that one class, so a default or a capability is written once.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import KvsimError
from ..models import ModelConfig
from ..units import UnitError, parse_tokens
from ..workload import Workload


class MethodSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # KV element types the runtime can store: "same" as the activations, or "int8"
    kv_dtypes: ClassVar[tuple[str, ...]] = ("same",)
    # runs with the oldest rows of its cache in host memory (a position-ordered cache that
    # attention reaches row by row, never reading every key)
    offload: ClassVar[bool] = False
    # the rows a step reads are known before its attention runs, so a copy stream can prefetch
    # them layer by layer (FlexGen §4.1); methods that choose rows from the current query cannot
    prefetchable: ClassVar[bool] = False
    # a small budget: parameters that read far fewer rows than dense at long contexts
    small_budget: ClassVar[dict] = {}

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

    def derived(self, model: ModelConfig, wl: Workload) -> dict:
        """Values of the parameters left unset (None), at the context ``wl.seq`` (arrays allowed)."""
        return {}

    @classmethod
    def full_budget(cls, model: ModelConfig, seq: int) -> dict | None:
        """Parameters with which the method attends to every cached row at context ``seq``
        (its output then equals dense attention's); None when it has no such setting."""
        return {}

    def overhead_bytes(self, model: ModelConfig, seq, batch):
        """HBM bytes its attention may move beyond dense attention's, at most (by the paper's
        byte counts, not by the cost model's code), summed over layers, sequences and heads."""
        return 0.0

    # ---- shared ------------------------------------------------------------------------------
    def resolved(self, model: ModelConfig, seq: int) -> dict:
        """Every parameter's value at context ``seq``, derived ones filled in (the runtime's)."""
        values = self.model_dump()
        for key, value in self.derived(model, Workload(seq=seq)).items():
            if values[key] is None:
                kind = float if "float" in str(type(self).model_fields[key].annotation) else int
                values[key] = kind(value)
        return values

    @classmethod
    def parameters(cls) -> list[tuple[str, object, str]]:
        """(name, default, description) of each parameter, for ``kvsim methods``."""
        return [(name, "derived" if f.default is None else f.default, f.description or "")
                for name, f in cls.model_fields.items()]

    @classmethod
    def from_params(cls, params: dict) -> "MethodSpec":
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
    import numpy as np
    if not np.all(condition):
        raise KvsimError(message)
