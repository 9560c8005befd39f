"""Arguments several commands share, and their parsing."""
from __future__ import annotations

import argparse
import json
import math
import sys

from ..errors import KvsimError
from ..models import DEFAULT_MODEL
from ..units import UnitError, parse_bytes, parse_count, parse_token_range
from ..workload import KV_DTYPES, WEIGHT_DTYPES


def _count(text: str, what: str, zero: bool = False) -> int:
    """argparse reports an ArgumentTypeError as "argument --batch: <message>", naming the option."""
    try:
        return parse_count(text, what, zero)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tokens(text: str) -> int:
    """A token count: 4096, 32k, 1M."""
    return _count(text, "a token count")


def positive_int(text: str) -> int:
    """A positive whole number; suffixes as for tokens (8k = 8192)."""
    return _count(text, "a number")


def non_negative_int(text: str) -> int:
    """A whole number >= 0; suffixes as for tokens (1M = 1048576)."""
    return _count(text, "a number", zero=True)


def count_list(text: str) -> list[int]:
    """'1,2,4,8', '1..64' or '4k..128k' (doubling), '16' or '32k'; positive whole numbers."""
    try:
        return parse_token_range(text, "a number")
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def byte_size(text: str) -> float:
    """A byte size: 12GiB, 8e9; must be positive."""
    try:
        value = parse_bytes(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive byte size, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
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
    """JSON for people and programs; a NaN or infinity is a bug, never printed as such."""
    return json.dumps(value, indent=2, sort_keys=False, default=float, allow_nan=False)


def on_terminal() -> bool:
    """Progress bars are drawn only when stderr is a terminal (never into a log file)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


# Exit statuses (README "Exit status"): 0 an answer, 1 the answer is "does not fit" / "no option",
# 2 a mistake in the input (kvsim.errors.KvsimError).
ANSWER, NO_FIT = 0, 1
