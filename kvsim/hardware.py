"""Hardware profiles: pydantic models of the YAML files in ``hw_profiles/``.

Every number is a ``{value, source}`` pair. Datasheet peaks (``peak_flops``, ``bandwidth_Bps``)
and achieved efficiencies (``efficiency`` curves) are separate fields, so a calibration replaces
only the latter. Units are SI base units named in the key.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import KvsimError
from .yamlfile import read_mapping, validated


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(_Frozen):
    value: float = Field(ge=0)
    source: str = Field(min_length=3)


class Curve(_Frozen):
    """Achieved fraction of peak against work per kernel (bytes or FLOPs), interpolated in log size."""

    points: list[tuple[float, float]] = Field(min_length=1)
    source: str = Field(min_length=3)

    @field_validator("points")
    @classmethod
    def _sorted_positive(cls, points):
        sizes = [size for size, _ in points]
        if any(size <= 0 for size in sizes) or sizes != sorted(sizes):
            raise ValueError("sizes must be positive and increasing")
        if any(not 0 < eff <= 1 for _, eff in points):
            raise ValueError("efficiencies must lie in (0, 1]")
        return points

    def at(self, size):
        sizes, effs = zip(*self.points)
        log_size = np.log10(np.maximum(np.asarray(size, dtype=float), 1.0))
        return np.interp(log_size, np.log10(sizes), effs)


class Compute(_Frozen):
    peak_flops: dict[Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4"], Sourced]
    efficiency: Curve  # by FLOPs per kernel
    tile_rows: Optional[Sourced] = None  # a GEMM's rows run in whole tiles of this many, where measured

    def peak(self, dtype: str) -> float:
        if dtype in self.peak_flops:
            return self.peak_flops[dtype].value
        if dtype in ("bf16", "fp16", "fp8", "int8") and "fp32" in self.peak_flops:
            return self.peak_flops["fp32"].value  # no native unit: runs converted on fp32 lanes
        raise KvsimError(f"no peak FLOP/s for {dtype} in this profile (has {sorted(self.peak_flops)})")


class Memory(_Frozen):
    kind: str
    capacity_bytes: Sourced
    bandwidth_Bps: Sourced
    l2_bytes: Sourced
    efficiency: Curve  # by bytes per kernel
    gather_efficiency: Optional[Sourced] = None  # fraction of ``efficiency`` for gathered rows
    reread_Bps: Optional[Sourced] = None  # loads of rows several programs read at once (L2 serves repeats)


class Link(_Frozen):
    name: str
    h2d_Bps: Sourced
    d2h_Bps: Sourced
    efficiency: Sourced  # achieved fraction for large pinned copies
    copy_efficiency: Optional[Curve] = None  # pinned copies, by bytes per copy (benchmarks/bench_pcie.py)
    gather_efficiency: Optional[Curve] = None  # zero-copy kernel reads of pinned rows, by bytes per row


class Interconnect(_Frozen):
    name: str
    bandwidth_Bps: Sourced  # per GPU, per direction
    efficiency: Sourced
    latency_s: Sourced  # per collective call


class Host(_Frozen):
    memory_bytes: Sourced
    bandwidth_Bps: Sourced


class SingleBlockTopK(_Frozen):
    """torch.topk's single-block radix select, one thread block per row, measured: a call takes
    call_s + row_s · (size / 1024)^size_exponent · ⌈rows / concurrent_rows⌉^rows_exponent."""
    call_s: Sourced
    row_s: Sourced  # one wave of rows of 1024 candidates
    size_exponent: Sourced
    rows_exponent: Sourced
    concurrent_rows: Sourced  # rows in flight at once (one per SM)

    def call_time(self, rows, size):
        per_row = (np.maximum(np.asarray(size, dtype=float), 1.0) / 1024.0) ** self.size_exponent.value
        waves = np.ceil(np.maximum(np.asarray(rows, dtype=float), 1.0) / self.concurrent_rows.value)
        return self.call_s.value + self.row_s.value * per_row * waves ** self.rows_exponent.value


class LibraryCall(_Frozen):
    """Measured time of one call of a multi-kernel library routine: call_s + bytes / throughput
    (torch.topk's multi-block radix select), and where measured the single-block select's law."""
    call_s: Sourced
    throughput_Bps: Sourced
    single_block: Optional[SingleBlockTopK] = None


class Calibration(_Frozen):
    measurements: list[str]
    date: str
    method: str
    held_out: str = ""


class HardwareProfile(_Frozen):
    name: str
    aliases: list[str] = []
    kind: Literal["gpu", "cpu"]
    vendor: str
    description: str
    compute: Compute
    memory: Memory
    launch_overhead_s: Sourced
    workspace_bytes: Sourced  # runtime context, allocator slack, kernels' scratch
    host_link: Optional[Link] = None
    interconnect: Optional[Interconnect] = None
    host: Optional[Host] = None
    topk: Optional[LibraryCall] = None  # torch.topk's radix selects, where measured
    calibration: Optional[Calibration] = None

    @property
    def preferred_dtype(self) -> str:
        return "bf16" if "bf16" in self.compute.peak_flops else "fp16"


def shipped_dir() -> Path:
    """The profiles inside the installed wheel, or beside the package in a source checkout."""
    inside = Path(__file__).parent / "hw_profiles"
    return inside if inside.is_dir() else Path(__file__).parent.parent / "hw_profiles"


def search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("KVSIM_HW_PATH", "").split(os.pathsep) if p]
    return extra + [shipped_dir()]


def _profile_files() -> list[Path]:
    files = []
    for folder in search_dirs():
        if folder.is_dir():
            files += sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    return files


@lru_cache(maxsize=64)
def load_file(path: str) -> HardwareProfile:
    file = Path(path)
    return validated(HardwareProfile, read_mapping(file, "hardware profile"), file)


def _names_in(path: Path) -> set[str]:
    data = read_mapping(path, "hardware profile")
    return {path.stem, str(data.get("name", ""))} | {str(a) for a in data.get("aliases", []) or []}


def list_profiles() -> list[HardwareProfile]:
    seen, profiles = set(), []
    for file in _profile_files():
        profile = load_file(str(file))
        if profile.name not in seen:
            seen.add(profile.name)
            profiles.append(profile)
    return profiles


def load_profile(name: str) -> HardwareProfile:
    """By path (``my-gpu.yaml``), or by name/alias in KVSIM_HW_PATH then the shipped profiles."""
    if isinstance(name, HardwareProfile):
        return name
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        if not Path(name).is_file():
            raise KvsimError(f"hardware profile file {name} does not exist")
        return load_file(str(Path(name)))
    files = _profile_files()
    for file in files:
        if file.stem == name:
            return load_file(str(file))
    for file in files:
        if name in _names_in(file):
            return load_file(str(file))
    names = sorted({n for f in files for n in _names_in(f) if n})
    raise KvsimError(f"unknown hardware '{name}'; choose one of: {', '.join(names)} (or a YAML path)")
