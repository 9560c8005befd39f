"""Method parameters with kvsim's names and defaults.

When ``kvsim.methods`` has the method, its frozen params model validates the user's values and
supplies the defaults (so the runtime and the cost model cannot drift); values it leaves
``None`` are derived here from the model and the context S, by the rules in METHODS.md.
Methods kvsim does not have yet fall back to ``RUNTIME_DEFAULTS`` (same names and defaults).
"""
from __future__ import annotations

import math

from kvsim.models import ModelConfig
from kvsim.units import parse_tokens

RUNTIME_DEFAULTS: dict[str, dict] = {
    "dense": {},
    # SparQ (arXiv 2312.04985 §3): compression 8 -> r = d/8, k = S/16; sweeps use l = k/4
    "sparq": {"r": None, "k": None, "local": None},
    # TidalDecode (arXiv 2410.05076 §3; reference scripts re-select at layer 13)
    "tidaldecode": {"k": 256, "reselect_layer": 13, "correction_period": 0},
    # Quest (arXiv 2406.10774 §4): pages of 16 tokens, token budget
    "quest": {"page_size": 16, "budget": 4096},
    # DuoAttention (arXiv 2410.10819 §4): ratio 0.5 GQA / 0.25 MHA, sink 64, recent 256
    "duoattention": {"retrieval_ratio": None, "sink": 64, "recent": 256},
    # ALISA (arXiv 2403.17312 §6): 80% KV sparsity in the throughput runs; INT8 optional
    "alisa": {"sparsity": 0.8, "kv_bits": 16},
    # ADORE (arXiv 2407.02328): no published defaults; m = 2048 cached, R = 8 reconstructed
    "adore": {"m": 2048, "R": 8},
    # H2O (FMInference/H2O HF scripts): heavy and recent 0.1·prompt each
    "h2o": {"heavy": None, "recent": None},
    # StreamingLLM (mit-han-lab/streaming-llm examples): 4 sinks, 2000 recent
    "streamingllm": {"sink": 4, "recent": 2000},
}

# (method, parameter) -> value when None, from (model, context S, values so far)
DERIVED = {
    ("sparq", "r"): lambda cfg, S, p: max(1, round(cfg.head_dim / 8)),
    ("sparq", "k"): lambda cfg, S, p: max(1, round(S / 16)),
    ("sparq", "local"): lambda cfg, S, p: p["k"] // 4,
    ("duoattention", "retrieval_ratio"): lambda cfg, S, p: 0.5 if cfg.n_kv_heads < cfg.n_heads else 0.25,
    ("h2o", "heavy"): lambda cfg, S, p: math.floor(0.1 * S),
    ("h2o", "recent"): lambda cfg, S, p: math.floor(0.1 * S),
}


def kvsim_method(name: str, params: dict):
    """kvsim's params model for ``name``, or None when kvsim has no such method yet."""
    from kvsim.methods import METHODS, get_method
    return get_method(name, params) if name in METHODS else None


def _coerce(value):
    if isinstance(value, str) and value[-1:].lower() in "km":
        return parse_tokens(value)
    return value


def resolve(name: str, params: dict | None, cfg: ModelConfig, context: int) -> tuple[dict, dict]:
    """(params as kvsim records them, every value the runtime uses) for context length S."""
    if name not in RUNTIME_DEFAULTS:
        raise ValueError(f"unknown method '{name}'; choose one of: {', '.join(RUNTIME_DEFAULTS)}")
    params = dict(params or {})
    method = kvsim_method(name, params)
    if method is not None:
        values, record = method.model_dump(), method.model_dump(exclude_none=True)
    else:
        unknown = sorted(set(params) - set(RUNTIME_DEFAULTS[name]))
        if unknown:
            valid = ", ".join(RUNTIME_DEFAULTS[name]) or "none"
            raise ValueError(f"{name}: unknown parameter '{unknown[0]}'; valid: {valid}")
        values = {**RUNTIME_DEFAULTS[name], **{k: _coerce(v) for k, v in params.items()}}
        record = {k: v for k, v in values.items() if v is not None}
    for (method_name, key), rule in DERIVED.items():
        if method_name == name and values.get(key) is None:
            values[key] = rule(cfg, context, values)
    return record, values
