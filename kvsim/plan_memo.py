"""Costs shared between hardware profiles where the cost read the same hardware facts.

A step's cost (``predict.step_cost``: FLOPs, bytes, launches, resident bytes) depends on the
hardware only through the profile fields it reads (today: the workspace bytes). The first time a
configuration is costed, it runs on a view of the profile that records every field read (path →
value). Another profile whose fields at those paths hold the same values gets the same cost
object; any other profile is costed afresh. A cost that uses the profile other than by reading
plain fields (calls a method of it, takes a list) is never shared.
"""
from __future__ import annotations

from pydantic import BaseModel

from .hardware import HardwareProfile
from .predict import step_cost

PLAIN = (int, float, str, bool, type(None))


class NotPlain(Exception):
    """The cost used the profile other than by reading plain fields."""


class _Recording:
    """A read-only view of a pydantic model that records the plain fields read from it."""

    def __init__(self, target: BaseModel, reads: dict, path: str = ""):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        path = f"{self._path}.{name}" if self._path else name
        if isinstance(value, PLAIN):
            self._reads[path] = value
            return value
        if isinstance(value, BaseModel):
            return _Recording(value, self._reads, path)
        raise NotPlain(path)


def _same(hw: HardwareProfile, reads: dict) -> bool:
    """Whether ``hw`` holds the recorded value at every recorded path."""
    for path, recorded in reads.items():
        value = hw
        for name in path.split("."):
            value = getattr(value, name, NotPlain)
        if value is NotPlain or value != recorded:
            return False
    return True


class CostMemo:
    """``step_cost`` results by configuration, each with the hardware fields it read."""

    def __init__(self):
        self._entries: dict = {}  # configuration key -> [(reads, cost)]

    def cost(self, method, model, hw: HardwareProfile, wl, gpus: int, key: tuple):
        """``step_cost(method, model, hw, wl, gpus)``; ``key`` names everything but ``hw``."""
        entries = self._entries.setdefault(key, [])
        for reads, cost in entries:
            if _same(hw, reads):
                return cost
        reads: dict = {}
        try:
            cost = step_cost(method, model, _Recording(hw, reads), wl, gpus)
        except NotPlain:
            return step_cost(method, model, hw, wl, gpus)
        entries.append((reads, cost))
        return cost
