"""Arguments several commands share, and their parsing."""
from __future__ import annotations

import json

from ..errors import KvsimError
from ..models import DEFAULT_MODEL
from ..units import UnitError, parse_tokens
from ..workload import KV_DTYPES, WEIGHT_DTYPES


def tokens(text: str) -> int:
    try:
        return parse_tokens(text)
    except UnitError as exc:
        raise KvsimError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise KvsimError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise KvsimError(f"expected a positive whole number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise KvsimError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise KvsimError(f"expected a whole number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KvsimError(f"expected a fraction in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise KvsimError(f"expected a fraction in [0, 1], got {text!r}")
    return value


def parse_params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise KvsimError(f"--param takes name=value, got {pair!r}")
        params[name.strip()] = value.strip()
    return params


def add_model_args(parser, model: bool = True) -> None:
    if model:
        parser.add_argument("--model", default=DEFAULT_MODEL, help=f"preset or YAML path (default {DEFAULT_MODEL})")
    parser.add_argument("--dtype", choices=WEIGHT_DTYPES, help="weights and activations (default: bf16, fp16 where the hardware lacks bf16)")
    parser.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV cache element type (default: as --dtype)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")


def add_engine_arg(parser) -> None:
    parser.add_argument("--engine", choices=("graphs", "eager"), default="graphs",
                        help="how steps run: graphs (CUDA-graph replay, kernels back to back; default) or "
                             "eager (each kernel launched from the host, as plain PyTorch runs)")


def add_format_arg(parser, choices=("table", "json", "csv")) -> None:
    parser.add_argument("--format", choices=choices, default="table")


def dump_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=float)
