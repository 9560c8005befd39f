"""Parse and format sizes for people.

Token counts use binary suffixes (``128k`` = 131072, ``1M`` = 1048576: context lengths are
quoted that way by model cards). Byte sizes read follow the suffix literally: ``80GB`` = 80e9,
``80GiB`` = 80·2^30. Byte sizes printed are SI everywhere (1 GB = 10^9 bytes), so one table never
mixes GB and GiB.
"""
from __future__ import annotations

import math
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


MAX_COUNT = 2**40  # 1T: far beyond any context, batch or token count a decode step can hold


def _split(text: str, table: dict, what: str) -> float:
    match = _NUMBER.match(str(text))
    if not match or match.group(2).lower() not in table:
        raise UnitError(f"cannot read {text!r} as {what}")
    return float(match.group(1)) * table[match.group(2).lower()]


def parse_count(text: str | int, what: str = "a count", zero: bool = False) -> int:
    """'8k' -> 8192, '1M' -> 1048576, '16' -> 16: a positive (or with ``zero``, non-negative)
    whole number up to 2^40, suffixes binary as for tokens."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        value = _split(text, _TOKEN_SUFFIX, f"{what} (e.g. 16, 32k, 1M)")
    if not math.isfinite(value):
        raise UnitError(f"{what} must be a finite number, got {text!r}")
    if value != int(value) or value < (0 if zero else 1):
        kind = "a whole number >= 0" if zero else "a positive whole number"
        raise UnitError(f"{what} must be {kind}, got {text!r}")
    if value > MAX_COUNT:
        raise UnitError(f"{what} must be at most 1T (2^40), got {text!r}")
    return int(value)


def parse_tokens(text: str | int) -> int:
    """'128k' -> 131072, '1M' -> 1048576, '4096' -> 4096. Must be a positive whole number."""
    return parse_count(text, "a token count")


def parse_bytes(text: str | float) -> float:
    """'80GB' -> 8e10, '24GiB' -> 25769803776, plain numbers are bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        value = _split(text, _BYTE_SUFFIX, "a byte size (e.g. 80GB, 24GiB)")
    if value < 0:
        raise UnitError(f"byte size must not be negative, got {text!r}")
    return value


def parse_token_range(text: str, what: str = "a token count") -> list[int]:
    """'4k..128k' -> doubling steps; '1k,4k,16k' -> the list; '8k' -> [8192]."""
    if ".." in text:
        low, high = (parse_count(part, what) for part in text.split("..", 1))
        if high < low:
            raise UnitError(f"range {text!r} ends before it starts")
        values = [low]
        while values[-1] * 2 <= high:
            values.append(values[-1] * 2)
        return values
    parts = text.split(",")
    if not all(part.strip() for part in parts):
        raise UnitError(f"cannot read {text!r} as a list of numbers (e.g. 1,8,32 or 4k..128k): an empty entry")
    return [parse_count(part, what) for part in parts]


def _digits(value: float) -> str:
    """Three significant digits, never an exponent: 12.1, 650, 1023."""
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:.0f}"


def _scaled(value: float, units) -> str:
    """``value`` in the largest of ``units`` ((name, scale), largest first) it reaches once
    rounded to three digits (999.9 B is "1 kB", not "1e+03 B")."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    rounded = float(f"{value:.3g}")
    for unit, scale in units:
        if abs(rounded) >= scale:
            return f"{_digits(value / scale)} {unit}".rstrip()
    unit, scale = units[-1]
    return f"{_digits(value / scale)} {unit}".rstrip()


def format_bytes(value: float) -> str:
    """SI units like every byte count kvsim prints (1 GB = 10^9 bytes), three digits: 1.5 GB."""
    return format_count(value, "B")


def format_seconds(value: float) -> str:
    """12.1 ms, 650 µs; hours and days for long runs (12.1 h, not 4.35e+04 s)."""
    return _scaled(value, (("d", 86400.0), ("h", 3600.0), ("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)))


def format_count(value: float, unit: str = "") -> str:
    """SI prefixes: 1.23 TFLOP."""
    return _scaled(value, tuple((prefix + unit, scale) for prefix, scale in (
        ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0))))


def format_ratio(value: float) -> str:
    """1.00x, 2.52x, 31.40x, 6790296x: two decimals, never an exponent."""
    return f"{float(value):.2f}x" if abs(float(value)) < 1000 else f"{float(value):.0f}x"


def format_tokens(value: int) -> str:
    """131072 -> 128k, 1048576 -> 1M; other counts as digits grouped by thousands."""
    value = int(value)
    for suffix, scale in (("M", 2**20), ("k", 2**10)):
        if value >= scale and value % scale == 0 and value // scale < 2**10:
            return f"{value // scale}{suffix}"
    return f"{value:,}" if value >= 10**5 else str(value)
