"""The ``kvsim`` command: a thin layer over the library. Each command lives in
``kvsim/commands/<name>.py`` with ``register(subparsers)``.

Exit status, for every command (as grep's): 0 an answer; 1 the answer is "no" (the
configuration does not fit, no option fits or meets the objective); 2 a mistake in the input
(unknown name, malformed size or file, a file that cannot be written), printed as one line on
stderr."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import DoesNotFit, KvsimError

# Each module registers its own subcommands; keep heavy imports (matplotlib, scipy, torch)
# inside the run functions so `kvsim predict` starts fast.
COMMANDS = ("predict", "catalog", "validate", "plan", "sweep", "schedule", "measure")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other mistake
        raise KvsimError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvsim", description="Predict what long-context LLM decoding costs on a machine.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"kvsim.commands.{name}").register(sub)
    return parser


def refuse_empty(args: argparse.Namespace) -> None:
    """An option given as an empty string is a mistake, never "not given" (``--out ""`` would
    otherwise write a default file)."""
    for key, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            name = "a file name" if key == "files" else "--" + key.replace("_", "-")
            raise KvsimError(f"{args.command}: {name} is empty; give a value")


def refuse_one_file_twice(args: argparse.Namespace) -> None:
    """``--out`` and ``--plot`` naming one file would leave only the second written."""
    out, plot = getattr(args, "out", None), getattr(args, "plot", None)
    if out and plot and os.path.realpath(out) == os.path.realpath(plot):
        raise KvsimError(f"{args.command}: --out and --plot name the same file ({out}); give two names")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        refuse_empty(args)
        refuse_one_file_twice(args)
        return args.run(args) or 0
    except DoesNotFit as exc:  # an answer: "no"
        print(_one_line(exc), file=sys.stderr)
        return 1
    except KvsimError as exc:
        print(f"kvsim: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
