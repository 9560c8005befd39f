"""Finding and loading hardware profiles: by path, or by name or alias in KVSIM_HW_PATH then the
shipped folder; the device a GPU's reported name matches; a device's profile with another's laws
(leave-one-device-out)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .errors import KvsimError
from .hardware import HardwareProfile
from .yamlfile import read_mapping, validated


@lru_cache(maxsize=1)
def shipped_dir() -> Path:
    """The profiles inside the installed wheel, or beside the package in a source checkout
    (looked up once: every prediction's interval reads the residuals beside them)."""
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
    return validated(HardwareProfile, resolved_data(str(file)), file)


def forget_loaded() -> None:
    """Drop the cached profiles (after a profile file was rewritten)."""
    load_file.cache_clear()
    resolved_data.cache_clear()


@lru_cache(maxsize=64)
def resolved_data(path: str) -> dict:
    """A profile file's mapping with the laws it inherits filled in (kvsim.transfer)."""
    from .transfer import resolve

    data = read_mapping(Path(path), "hardware profile")
    parent = data.get("inherits")
    if not parent:
        return resolve(data, None)
    if parent in _names(Path(path), data):
        raise KvsimError(f"{path}: a profile cannot inherit from itself")
    return resolve(data, resolved_data(str(profile_file(str(parent)))))


def _names_in(path: Path) -> set[str]:
    return _names(path, read_mapping(path, "hardware profile"))


def _names(path: Path, data: dict) -> set[str]:
    return {path.stem, str(data.get("name", ""))} | {str(a) for a in data.get("aliases", []) or []}


def list_profiles() -> list[HardwareProfile]:
    seen, profiles = set(), []
    for file in _profile_files():
        profile = load_file(str(file))
        if profile.name not in seen:
            seen.add(profile.name)
            profiles.append(profile)
    return profiles


def profile_file(name: str) -> Path:
    """The file of a profile given by path, or by name/alias in KVSIM_HW_PATH then the shipped ones."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        if Path(name).exists() and not Path(name).is_file():
            raise KvsimError(f"hardware profile {name} is not a regular file")
        if not Path(name).is_file():
            raise KvsimError(f"hardware profile file {name} does not exist")
        return Path(name)
    files = _profile_files()
    for file in files:
        if file.stem == name:
            return file
    for file in files:
        if name in _names_in(file):
            return file
    names = sorted({n for f in files for n in _names_in(f) if n})
    raise KvsimError(f"unknown hardware '{name}'; choose one of: {', '.join(names)} (or a YAML path)")


def load_profile(name: str) -> HardwareProfile:
    """By path (``my-gpu.yaml``), or by name/alias in KVSIM_HW_PATH then the shipped profiles."""
    if isinstance(name, HardwareProfile):
        return name
    return load_file(str(profile_file(name)))


def profile_for_device(device_name: str) -> Optional[str]:
    """The profile whose ``device_names`` words all occur in the name a GPU reports (the entry
    with the most words wins: "H100 PCIe" before "H100")."""
    best, best_words = None, 0
    for profile in list_profiles():
        for words in profile.device_names:
            if len(words) > best_words and all(w.lower() in device_name.lower() for w in words):
                best, best_words = profile.name, len(words)
    return best


def left_out(device: str, source: str) -> HardwareProfile:
    """``device``'s profile with none of its own laws: every one transferred from ``source``
    (leave-one-device-out). Its name says so."""
    from .transfer import resolve, without_laws
    data = without_laws(dict(resolved_data(str(profile_file(device)))))
    data["inherits"] = source
    data["name"] = f"{data['name']} from {load_profile(source).name}"
    data["aliases"] = []
    return HardwareProfile.model_validate(resolve(data, resolved_data(str(profile_file(source)))))
