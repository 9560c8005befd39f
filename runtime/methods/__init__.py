"""Runtime methods, one file each, with the names kvsim's cost models use."""
from __future__ import annotations

from .adore import ADORE
from .alisa import ALISA
from .base import RuntimeMethod
from .dense import Dense
from .duoattention import DuoAttention
from .h2o import H2O
from .params import RUNTIME_DEFAULTS, resolve
from .quest import Quest
from .sparq import SparQ
from .streamingllm import StreamingLLM
from .tidaldecode import TidalDecode

METHODS: dict[str, type[RuntimeMethod]] = {
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

__all__ = ["METHODS", "RUNTIME_DEFAULTS", "RuntimeMethod", "resolve"]
