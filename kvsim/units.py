"""Parse and format sizes for people.

Token counts use binary suffixes (``128k`` = 131072, ``1M`` = 1048576: context lengths are
quoted that way by model cards). Byte sizes follow the suffix literally: ``80GB`` = 80e9,
``80GiB`` = 80·2^30.
"""
from __future__ import annotations

import re

_TOKEN_SUFFIX = {"": 1, "k": 2**10, "ki": 2**10, "m": 2**20, "mi": 2**20, "g": 2**30, "gi": 2**30}
_BYTE_SUFFIX = {
    "": 1, "b": 1,
    "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


class UnitError(ValueError):
    """A size a person typed that cannot be read."""


def _split(text: str, table: dict, what: str) -> float:
    match = _NUMBER.match(str(text))
    if not match or match.group(2).lower() not in table:
        raise UnitError(f"cannot read {text!r} as {what}")
    return float(match.group(1)) * table[match.group(2).lower()]


def parse_tokens(text: str | int) -> int:
    """'128k' -> 131072, '1M' -> 1048576, '4096' -> 4096. Must be a positive whole number."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        value = _split(text, _TOKEN_SUFFIX, "a token count (e.g. 4096, 32k, 1M)")
    if value != int(value) or value <= 0:
        raise UnitError(f"token count must be a positive whole number, got {text!r}")
    return int(value)


def parse_bytes(text: str | float) -> float:
    """'80GB' -> 8e10, '24GiB' -> 25769803776, plain numbers are bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        value = _split(text, _BYTE_SUFFIX, "a byte size (e.g. 80GB, 24GiB)")
    if value < 0:
        raise UnitError(f"byte size must not be negative, got {text!r}")
    return value


def parse_token_range(text: str) -> list[int]:
    """'4k..128k' -> doubling steps; '1k,4k,16k' -> the list; '8k' -> [8192]."""
    if ".." in text:
        low, high = (parse_tokens(part) for part in text.split("..", 1))
        if high < low:
            raise UnitError(f"range {text!r} ends before it starts")
        values = [low]
        while values[-1] * 2 <= high:
            values.append(values[-1] * 2)
        return values
    return [parse_tokens(part) for part in text.split(",") if part.strip()]


def format_bytes(value: float) -> str:
    """Binary units, three significant digits: 1.50 GiB."""
    value = float(value)
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def format_seconds(value: float) -> str:
    value = float(value)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def format_count(value: float, unit: str = "") -> str:
    """SI prefixes: 1.23 TFLOP."""
    value = float(value)
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def format_tokens(value: int) -> str:
    value = int(value)
    for suffix, scale in (("M", 2**20), ("k", 2**10)):
        if value >= scale and value % scale == 0:
            return f"{value // scale}{suffix}"
    return str(value)
