"""A number with its source (``{value, source}``), the unit every profile field is made of; the
source says how much to trust it (kvsim.trust)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .trust import trust_of


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(_Frozen):
    value: float = Field(ge=0, allow_inf_nan=False)
    source: str = Field(min_length=3)

    @property
    def trust(self) -> str:
        return trust_of(self.source)
