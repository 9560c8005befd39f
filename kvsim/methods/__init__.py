"""Method registry: adding a method is one file here and one line below."""
from __future__ import annotations

from ..errors import KvsimError
from .adore import ADORE
from .alisa import ALISA
from .base import Method
from .dense import Dense
from .duoattention import DuoAttention
from .h2o import H2O
from .quest import Quest
from .sparq import SparQ
from .streamingllm import StreamingLLM
from .tidaldecode import TidalDecode

METHODS: dict[str, type[Method]] = {
    "dense": Dense,
    "sparq": SparQ,
    "tidaldecode": TidalDecode,
    "quest": Quest,
    "duoattention": DuoAttention,
    "alisa": ALISA,
    "adore": ADORE,
    "h2o": H2O,
    "streamingllm": StreamingLLM,
}


def get_method(name: str, params: dict | None = None) -> Method:
    if isinstance(name, Method):
        return name
    if name not in METHODS:
        raise KvsimError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return METHODS[name].from_params(params or {})
