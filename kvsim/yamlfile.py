"""Reading the YAML files a person writes (hardware profiles, models, prices): one line naming
the file, and the field, for every mistake."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .errors import KvsimError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_mapping(path: Path, what: str = "file") -> dict:
    """The top-level mapping of a YAML file."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise KvsimError(f"{what} {path} is not a regular file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as exc:
        raise KvsimError(f"cannot read {what} {path} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise KvsimError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise KvsimError(f"{path}: nested too deeply to be a {what}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise KvsimError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise KvsimError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    return data


def validated(cls: type[BaseModel], data, path: Path, prefix: str = ""):
    """``cls`` built from ``data``; a validation error names the file and the (prefixed) field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = prefix + (".".join(str(part) for part in first["loc"]) or "(top level)")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise KvsimError(f"{path}: field '{field}': {first['msg']}{more}") from None
