"""The runtime's methods: kvsim's registry (kvsim.methods) names them; each one's runtime half is
``kvsim/methods/<name>/runtime.py`` and its parameters come from its spec, so the runtime and the
cost model share one set of defaults."""
from __future__ import annotations

from collections.abc import Mapping

from kvsim.methods import REGISTRY, Faces, spec_of
from kvsim.models import ModelConfig

from .method import RuntimeMethod


METHODS: Mapping[str, type[RuntimeMethod]] = Faces("runtime")  # name -> RuntimeMethod subclass


def resolve(name: str, params: dict | None, cfg: ModelConfig, context: int) -> tuple[dict, dict]:
    """(params as kvsim records them, every value the runtime uses) for context length S: the
    spec validates the user's values, supplies the defaults and derives the rest."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method '{name}'; choose one of: {', '.join(REGISTRY)}")
    spec = spec_of(name).from_params(dict(params or {}))
    return spec.model_dump(exclude_none=True), spec.resolved(cfg, context)
