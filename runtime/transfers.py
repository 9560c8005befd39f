"""Bytes moved over the host link, counted where the copies are issued, and tensor sizes."""
from __future__ import annotations


class PcieCounter:
    """Bytes that crossed the host link, per direction, counted where the copies are issued."""

    def __init__(self):
        self.h2d = 0
        self.d2h = 0

    def add(self, direction: str, nbytes: int) -> None:
        setattr(self, direction, getattr(self, direction) + int(nbytes))

    def as_dict(self) -> dict[str, int]:
        return {"h2d": self.h2d, "d2h": self.d2h}

    def reset(self) -> None:
        self.h2d = self.d2h = 0


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
