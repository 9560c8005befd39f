"""Published quality data: the tables (``kvsim/data/quality.yaml``: source, model, benchmark,
context and dense score of each) and every method's entries (``kvsim/methods/<name>/quality.yaml``,
one per published setting, found through the method registry), validated with one-line errors.
``kvsim.quality`` looks configurations up in them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import KvsimError
from .methods import METHODS, REGISTRY, data_file
from .yamlfile import read_mapping, validated

DATA_FILE = Path(__file__).with_name("data") / "quality.yaml"  # benchmarks and tables
METHOD_FILE = "quality.yaml"  # each method's entries, in its folder


class Benchmark(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str = Field(min_length=3)
    higher_is_better: bool


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(min_length=10)
    model: str = Field(min_length=2)
    kvsim_model: Optional[str] = None
    benchmark: str
    task: str = Field(min_length=3)
    context: int = Field(gt=0)
    context_note: str = ""
    dense: float = Field(gt=0)
    dense_source: str = ""


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str
    method: Optional[str] = None  # implied by the folder of a method's own file
    budget_tokens: Optional[int] = Field(None, gt=0)
    budget_fraction: Optional[float] = Field(None, gt=0, le=1)
    params: dict[str, float] = {}
    score: float = Field(ge=0)

    @model_validator(mode="after")
    def _one_budget(self):
        if (self.budget_tokens is None) == (self.budget_fraction is None):
            raise ValueError("give exactly one of budget_tokens and budget_fraction")
        return self


@dataclass(frozen=True)
class Published:
    """One entry with its table's facts: what ``quality`` matches against."""
    method: str
    model: str
    kvsim_model: Optional[str]
    benchmark: str
    task: str
    context: int
    fraction: float  # kept share of the context
    params: dict
    score: float
    dense: float
    relative: float
    source: str
    dense_source: str
    context_note: str = ""


def load_quality(path: str | Path | None = None) -> tuple[dict[str, Benchmark], list[Published]]:
    """(benchmarks, entries): the shipped tables with every method's entries, or one file ``path``
    holding benchmarks, tables and entries (each naming its method)."""
    return _load(str(path) if path else None)


@lru_cache(maxsize=4)
def _load(path: Optional[str]):
    tables_file = Path(path or DATA_FILE)
    data = _sections(tables_file, ("benchmarks", "tables") + (("entries",) if path else ()))
    marks = {k: validated(Benchmark, v, tables_file, f"benchmarks.{k}.") for k, v in data["benchmarks"].items()}
    tables = {k: validated(Table, v, tables_file, f"tables.{k}.") for k, v in data["tables"].items()}
    files = [(tables_file, None, data["entries"])] if path else [
        (f, name, _sections(f, ("entries",))["entries"]) for name in REGISTRY
        if (f := data_file(name, METHOD_FILE)).is_file()]
    entries = [_entry(raw, f, i, owner, marks, tables) for f, owner, rows in files for i, raw in enumerate(rows)]
    return marks, entries


def _sections(path: Path, keys: tuple) -> dict:
    data = read_mapping(path, "quality file")
    for key in keys:
        kind = dict if key != "entries" else list
        if not isinstance(data.get(key), kind):
            raise KvsimError(f"{path}: expected '{key}:' as a {'mapping' if kind is dict else 'list'}")
    return data


def _entry(raw, path: Path, i: int, owner: Optional[str], marks: dict, tables: dict) -> Published:
    """Entry ``i`` of ``path`` (the file of method ``owner``, or None: entries name their method)."""
    entry = validated(Entry, raw, path, f"entries.{i}.")
    method, table = entry.method or owner, tables.get(entry.table)
    problem = ("no method" if method is None
               else f"method {method} in {owner}'s file" if owner and method != owner
               else "unknown table" if table is None else "unknown benchmark" if table.benchmark not in marks
               else "unknown method" if method not in METHODS
               else "score 0 where lower is better" if not (entry.score or marks[table.benchmark].higher_is_better)
               else "")
    if problem:
        raise KvsimError(f"{path}: entries.{i}: {problem} ({entry.table}, {method})")
    return _published(entry.model_copy(update={"method": method}), table, marks[table.benchmark])


def _published(entry: Entry, table: Table, mark: Benchmark) -> Published:
    fraction = entry.budget_fraction or min(entry.budget_tokens / table.context, 1.0)
    relative = entry.score / table.dense if mark.higher_is_better else table.dense / entry.score
    return Published(entry.method, table.model, table.kvsim_model, table.benchmark, table.task,
                     table.context, fraction, dict(entry.params), entry.score, table.dense, relative,
                     table.source, table.dense_source, table.context_note)
