"""Costs shared between hardware profiles where the cost read the same hardware facts.

A step's cost (``predict.step_cost``: FLOPs, bytes, launches, resident bytes) depends on the
hardware only through the profile fields it reads (today: the workspace bytes, which it keeps
as a resident). The first time a configuration is costed, it runs on a view of the profile that
records every plain field read (path → value) and hands out each number as a stand-in
(``Fact``) that refuses to be computed with. A cost that only keeps the numbers it read, as
fields of its ops or residents, is kept with the stand-ins, and each profile gets a copy with
its own values in their places: the numbers costing it afresh gives, and the same ops (so the
roofline's layout of them is shared too). A cost that computes with a number it read is costed
again on the recording view without stand-ins, and shared only between profiles that hold the
recorded value at every path read, as the other plain fields read (strings, flags) must agree
for any cost. A cost that uses the profile other than by reading plain fields (calls a method
of it, takes a list) is never shared.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydantic import BaseModel

from .cost import Cost
from .hardware import HardwareProfile
from .predict import step_cost

PLAIN = (int, float, str, bool, type(None))


class NotPlain(Exception):
    """The cost used the profile other than by reading plain fields."""


class Fact:
    """A number read from a profile, kept in a cost until a profile's own value takes its
    place. Computing with it, comparing it, testing or printing it raises TypeError."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def _refuse(self, *args):
        raise TypeError(f"profile fact {self.path} computed with")

    __float__ = __int__ = __index__ = __bool__ = __str__ = __format__ = __eq__ = __ne__ = _refuse
    __hash__ = None


class _Recording:
    """A read-only view of a pydantic model that records the plain fields read from it; with
    ``facts``, numbers are recorded there and handed out as ``Fact`` stand-ins."""

    def __init__(self, target: BaseModel, reads: dict, path: str = "", facts: dict | None = None):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_facts", facts)

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        path = f"{self._path}.{name}" if self._path else name
        if type(value) is float and self._facts is not None:
            return self._facts.setdefault(path, Fact(path))
        if isinstance(value, PLAIN):
            self._reads[path] = value
            return value
        if isinstance(value, BaseModel):
            return _Recording(value, self._reads, path, self._facts)
        raise NotPlain(path)


def _read(hw: HardwareProfile, path: str):
    value = hw
    for name in path.split("."):
        value = getattr(value, name, NotPlain)
    return value


def _same(hw: HardwareProfile, reads: dict) -> bool:
    """Whether ``hw`` holds the recorded value at every recorded path."""
    return all((value := _read(hw, path)) is not NotPlain and value == recorded for path, recorded in reads.items())


def _holders(cost: Cost, facts: list[Fact]) -> list[int] | None:
    """Positions (ops, then residents) of the items holding a Fact as a field; None where one
    sits deeper (in a tuple, an object array) where filling would not reach it."""
    ids = {id(f) for f in facts}
    fields = [vars(item).values() for item in cost.ops + cost.resident]
    deeper = [v for values in fields for v in values
              if type(v) in (tuple, list) or type(v) is np.ndarray and v.dtype.kind == "O"]
    if any(type(v) is np.ndarray or ids.intersection(map(id, v)) for v in deeper):
        return None
    return [index for index, values in enumerate(fields) if ids.intersection(map(id, values))]


class _Template:
    """A cost holding Facts, and the costs filled in for each profile's values of them."""

    def __init__(self, cost: Cost, paths: list[str], holders: list[int]):
        self.cost, self.paths, self.holders, self.filled = cost, paths, holders, {}

    def fill(self, hw: HardwareProfile) -> Cost:
        """The cost with ``hw``'s values; its ops are the template's own where they hold none."""
        values = {path: _read(hw, path) for path in self.paths}
        key = tuple(values.values())
        if key not in self.filled:
            items = list(self.cost.ops + self.cost.resident)
            for index in self.holders:
                item = items[index]
                items[index] = replace(item, **{name: values[v.path] for name, v in vars(item).items()
                                                if isinstance(v, Fact)})
            ops = self.cost.ops if all(i >= len(self.cost.ops) for i in self.holders) else tuple(items[:len(self.cost.ops)])
            self.filled[key] = Cost(ops, tuple(items[len(self.cost.ops):]))
        return self.filled[key]


class CostMemo:
    """``step_cost`` results by configuration, each with the hardware fields it read."""

    def __init__(self):
        self._entries: dict = {}  # configuration key -> [(reads, cost or _Template)]
        self._made: dict = {}  # configuration key -> what ``once`` made

    def once(self, key: tuple, make):
        """``make()`` the first time ``key`` is asked for (something that reads no hardware)."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def cost(self, method, model, hw: HardwareProfile, wl, gpus: int, key: tuple):
        """``step_cost(method, model, hw, wl, gpus)``; ``key`` names everything but ``hw``."""
        entries = self._entries.setdefault(key, [])
        for reads, cost in entries:
            if _same(hw, reads):
                return cost.fill(hw) if isinstance(cost, _Template) else cost
        reads: dict = {}
        try:  # stand-ins unless a cost of this configuration computed with a number it read
            cost = None if any(isinstance(c, Cost) for _, c in entries) else self._template(
                method, model, hw, wl, gpus, reads)
            if cost is None:
                reads = {}
                cost = step_cost(method, model, _Recording(hw, reads), wl, gpus)
        except NotPlain:
            return step_cost(method, model, hw, wl, gpus)
        entries.append((reads, cost))
        return cost.fill(hw) if isinstance(cost, _Template) else cost

    @staticmethod
    def _template(method, model, hw, wl, gpus, reads: dict) -> _Template | None:
        """The cost with Facts for the numbers read, or None where it computes with one."""
        facts: dict = {}
        try:
            cost = step_cost(method, model, _Recording(hw, reads, facts=facts), wl, gpus)
        except TypeError:
            return None
        holders = _holders(cost, list(facts.values()))
        return None if holders is None else _Template(cost, list(facts), holders)
