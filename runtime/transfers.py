"""Bytes moved over the host link, counted where the copies are issued, and tensor sizes."""
from __future__ import annotations

import torch


class PcieCounter:
    """Bytes that crossed the host link, per direction, counted where the copies are issued;
    a byte count that lives on the device (rows a kernel selected) is summed there, without a
    sync, and read when the counts are."""

    def __init__(self):
        self.h2d = 0
        self.d2h = 0
        self._on_device: list[tuple[str, int, torch.Tensor]] = []

    def add(self, direction: str, nbytes: int) -> None:
        setattr(self, direction, getattr(self, direction) + int(nbytes))

    def on_device(self, direction: str, unit_bytes: int, device) -> torch.Tensor:
        """A count (int64, on ``device``) that kernels add to; it stands for count·unit_bytes."""
        count = torch.zeros((), dtype=torch.int64, device=device)
        self._on_device.append((direction, int(unit_bytes), count))
        return count

    def as_dict(self) -> dict[str, int]:
        out = {"h2d": self.h2d, "d2h": self.d2h}
        for direction, unit, count in self._on_device:
            out[direction] += int(count.item()) * unit
        return out

    def reset(self) -> None:
        self.h2d = self.d2h = 0
        for _, _, count in self._on_device:
            count.zero_()


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
