"""Every file kvsim writes (``--out``, ``--plot``): checked before any work, written whole or not
at all.

A path is resolved through symlinks to the file it names (writing a link writes its target); that
file must be a regular file or not exist yet, in a folder kvsim may create files in (missing
folders are created when the file is written).
Directories, FIFOs, device nodes, sockets and read-only files (no write permission for anyone,
or none for this user) are refused with one line. The text or figure goes
to a temporary file in the same folder, which is then renamed over the target, so a crash, a full
disk or a refused plot format leaves the old file as it was.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import KvsimError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def target(path: str | os.PathLike, option: str = "--out") -> Path:
    """The regular file that writing ``path`` replaces or creates (a symlink's final target)."""
    if not str(path).strip():
        raise KvsimError(f"{option} needs a file name")
    real = Path(os.path.realpath(path))
    folder = _existing(real.parent)
    if not folder.is_dir():
        raise KvsimError(f"{option} {path}: {folder} is not a folder")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise KvsimError(f"{option} {path}: cannot use it ({exc.strerror})") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((word for test, word in _KINDS if test(mode)), "not a regular file")
        raise KvsimError(f"{option} {path}: is {kind}; give a regular file name")
    if mode is not None and (not mode & 0o222 or not os.access(real, os.W_OK)):  # renaming would replace it
        raise KvsimError(f"{option} {path}: is read-only; give another file name or make it writable")
    return real


def _existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (missing folders are created on writing)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check(path: str | os.PathLike, option: str = "--out") -> Path:
    """:func:`target`, and proof that a file can be created there (before any work is done)."""
    real = target(path, option)
    folder = _existing(real.parent)
    try:
        handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as exc:
        raise KvsimError(f"{option} {path}: cannot write in {folder} ({exc.strerror})") from None
    os.close(handle)
    os.unlink(temp)
    return real


def _mode(real: Path) -> int:
    """The existing file's permissions, else what a plain open() would give a new file."""
    if real.exists():
        return stat.S_IMODE(os.stat(real).st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _replace(path, option: str, write) -> None:
    """Run ``write(temp_path)`` on a temporary file beside the target, then rename it over it."""
    real = target(path, option)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as exc:
        raise KvsimError(f"{option} {path}: cannot write in {real.parent} ({exc.strerror})") from None
    os.close(handle)
    try:
        os.chmod(temp, _mode(real))
        write(temp)
        os.replace(temp, real)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise KvsimError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text(path, text: str, option: str = "--out") -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    def write(temp):
        with open(temp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
    _replace(path, option, write)


def append_text(path, text: str, option: str = "--out") -> None:
    """Append ``text`` to ``path`` (created if missing): the old content and the new, renamed over
    the old file at once, so a crash leaves either the old file or the whole new one."""
    real = target(path, option)
    try:
        old = real.read_bytes() if real.exists() else b""
    except OSError as exc:
        raise KvsimError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    if old and not old.endswith(b"\n"):
        old += b"\n"

    def write(temp):
        with open(temp, "wb") as out:
            out.write(old + text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
    _replace(path, option, write)


def plot_format(path, option: str = "--plot") -> str:
    """The image format ``path``'s suffix names (PNG when it has none), refused when matplotlib
    cannot write it."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(str(path)).suffix.lower().lstrip(".") or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise KvsimError(f"{option} {path}: cannot write a .{suffix} plot; use one of: "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    return suffix


def check_plot(path, option: str = "--plot") -> None:
    """Everything about a --plot path that can be refused before any work."""
    plot_format(path, option)
    check(path, option)


def write_figure(path, figure, option: str = "--plot", dpi: int = 120) -> None:
    """Save a matplotlib figure to ``path`` whole or not at all."""
    fmt = plot_format(path, option)
    _replace(path, option, lambda temp: figure.savefig(temp, format=fmt, dpi=dpi))
