"""Method registry. A method is one folder, ``kvsim/methods/<name>/``:

  spec.py     its parameters with defaults (derived ones too), capabilities, budgets, paper
  cost.py     its cost model (numpy ops), a subclass of its spec and ``base.Method``
  runtime.py  the reference runtime's cache and step (torch; imported by the runtime only)
  kernels*.py Triton kernels only this method uses, each with its torch reference
  quality.yaml its published accuracy, one entry per setting (read by kvsim.quality_data)

Adding a method is its folder and one line below: name -> class name (``<Class>Spec`` in
spec.py, ``<Class>`` in cost.py and runtime.py). Modules are imported when a method is first
looked up, so ``kvsim predict --method dense`` loads only what it runs.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from ..errors import KvsimError
from .base import Method
from .spec import MethodSpec

REGISTRY: dict[str, str] = {
    "dense": "Dense",
    "sparq": "SparQ",
    "tidaldecode": "TidalDecode",
    "quest": "Quest",
    "duoattention": "DuoAttention",
    "alisa": "ALISA",
    "adore": "ADORE",
    "h2o": "H2O",
    "streamingllm": "StreamingLLM",
}


def module_of(name: str, part: str) -> str:
    """The dotted module of a method's ``part`` ("spec", "cost", "runtime"), not imported."""
    return f"{__name__}.{name}.{part}"


def check_name(name: str) -> None:
    if name not in REGISTRY:
        raise KvsimError(f"unknown method '{name}'; choose one of: {', '.join(REGISTRY)}")


class Faces(Mapping):
    """name -> one face of every registered method: the class ``<Class><suffix>`` of its
    ``part``.py ("spec", "cost" or "runtime"), imported on first use."""

    def __init__(self, part: str, suffix: str = ""):
        self.part, self.suffix = part, suffix

    def __getitem__(self, name: str):
        if name not in REGISTRY:
            raise KeyError(name)
        return getattr(importlib.import_module(module_of(name, self.part)), REGISTRY[name] + self.suffix)

    def __iter__(self):
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


SPECS: Mapping[str, type[MethodSpec]] = Faces("spec", "Spec")
METHODS: Mapping[str, type[Method]] = Faces("cost")  # the cost models


def data_file(name: str, filename: str) -> Path:
    """A data file in method ``name``'s folder (e.g. "quality.yaml": its published accuracy),
    found without importing the method."""
    check_name(name)
    return Path(__file__).parent / name / filename


def spec_of(name: str) -> type[MethodSpec]:
    """The method's spec class (parameters and capabilities, no cost model)."""
    check_name(name)
    return SPECS[name]


def names_with(capability: str) -> list[str]:
    """Registered methods whose spec sets ``capability`` (e.g. "offload")."""
    return [name for name in REGISTRY if getattr(spec_of(name), capability)]


def get_method(name: str, params: dict | None = None) -> Method:
    if isinstance(name, Method):
        return name
    check_name(name)
    return METHODS[name].from_params(params or {})
