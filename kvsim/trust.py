"""How a profile number was obtained, from the first word of its source."""
from __future__ import annotations


TRUST_LEVELS = ("datasheet", "measured", "transferred", "assumed")


def trust_of(source: str) -> str:
    """How a source was obtained, from the word it starts with ("measured"/"fitted",
    "transferred", "assumed"); anything else is a datasheet or vendor figure."""
    head = source.strip().lower()
    if head.startswith(("measured", "fitted")):
        return "measured"
    for level in ("transferred", "assumed"):
        if head.startswith(level):
            return level
    return "datasheet"
