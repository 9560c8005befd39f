"""Method registry: adding a method is one file here and one line below. Modules are imported
when a method is first looked up, so `kvsim predict --method dense` loads only what it runs."""
from __future__ import annotations

import importlib
from collections.abc import Mapping

from ..errors import KvsimError
from .base import Method

_REGISTRY: dict[str, tuple[str, str]] = {  # name -> (module in kvsim.methods, class)
    "dense": ("dense", "Dense"),
    "sparq": ("sparq", "SparQ"),
    "tidaldecode": ("tidaldecode", "TidalDecode"),
    "quest": ("quest", "Quest"),
    "duoattention": ("duoattention", "DuoAttention"),
    "alisa": ("alisa", "ALISA"),
    "adore": ("adore", "ADORE"),
    "h2o": ("h2o", "H2O"),
    "streamingllm": ("streamingllm", "StreamingLLM"),
}


class _Methods(Mapping):
    """name -> Method subclass, importing each module on first use."""

    def __getitem__(self, name: str) -> type[Method]:
        module, cls = _REGISTRY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)

    def __iter__(self):
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)


METHODS: Mapping[str, type[Method]] = _Methods()


def get_method(name: str, params: dict | None = None) -> Method:
    if isinstance(name, Method):
        return name
    if name not in _REGISTRY:
        raise KvsimError(f"unknown method '{name}'; choose one of: {', '.join(_REGISTRY)}")
    return METHODS[name].from_params(params or {})
