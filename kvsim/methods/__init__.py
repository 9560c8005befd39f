"""Method registry: adding a method is one file here and one line below."""
from __future__ import annotations

from ..errors import KvsimError
from .base import Method
from .dense import Dense

METHODS: dict[str, type[Method]] = {
    "dense": Dense,
}


def get_method(name: str, params: dict | None = None) -> Method:
    if isinstance(name, Method):
        return name
    if name not in METHODS:
        raise KvsimError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return METHODS[name].from_params(params or {})
