"""kvsim sweep: predictions over contexts × batches for lists of hardware, GPU counts and methods,
written as CSV or JSON lines."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import KvsimError
from ..profiles import load_profile
from ..methods import METHODS
from .. import outfile
from ..records import to_csv, write_whole
from ..sweep import gpu_profiles, sweep
from ..units import UnitError, parse_token_range
from .common import add_engine_arg, add_model_args, count_list, non_negative_int, on_terminal, parse_params


def token_list(text: str) -> list[int]:
    """Contexts: '4k..128k' (doubling), '4k,32k' or '8k'."""
    try:
        return parse_token_range(text, "a token count")
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def comma_names(text: str, option: str) -> list[str]:
    """'a,b' -> ['a', 'b']; an empty name (',', 'a,') is a mistake, not a name left out."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise KvsimError(f"{option} {text!r}: an empty name; give 'all' or names separated by commas")
    return names


def hardware_list(text: str) -> list:
    """'all' (every GPU profile) or comma-separated names, aliases or YAML paths."""
    return gpu_profiles() if text == "all" else [load_profile(name) for name in comma_names(text, "--hw")]


def method_list(text: str) -> list[str]:
    names = list(METHODS) if text == "all" else comma_names(text, "--method")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise KvsimError(f"unknown method '{unknown[0]}'; choose 'all' or from: {', '.join(METHODS)}")
    return names


def register(sub) -> None:
    parser = sub.add_parser("sweep", help="predict over contexts × batches × hardware × GPUs × methods")
    parser.add_argument("--hw", required=True, help="'all' GPU profiles or names: h100,rtx3090")
    parser.add_argument("--method", default="dense", help="'all' or names: dense,sparq (default dense)")
    parser.add_argument("--seq", type=token_list, required=True,
                        help="contexts: 4k..128k (doubling), 4k,32k or 8k")
    parser.add_argument("--batch", type=count_list, default=[1], help="batches: 1,8,32 or 1..64 (default 1)")
    parser.add_argument("--gpus", type=count_list, default=[1], help="tensor-parallel GPU counts: 1,2,4,8")
    parser.add_argument("--gen", type=non_negative_int, default=0, help="also predict generating N tokens")
    add_model_args(parser)
    add_engine_arg(parser)
    parser.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out's suffix, else csv")
    parser.add_argument("--out", help="file to write (whole or not at all); default stdout")
    parser.add_argument("--plot", help="latency and memory against context (PNG; .pdf, .svg by suffix)")
    parser.set_defaults(run=run)


def run(args) -> int:
    fmt = args.format or ("jsonl" if (args.out or "").endswith((".jsonl", ".json")) else "csv")
    if args.out:  # refused before any work, and before anything is written
        outfile.check(args.out, "--out")
    if args.plot:
        outfile.check_plot(args.plot)
    hws = hardware_list(args.hw)
    result = sweep(hws, method_list(args.method), args.seq, args.batch, args.gpus,
                   model=args.model, gen=args.gen, dtype=args.dtype, kv_dtype=args.kv_dtype,
                   params=parse_params(args.param), progress=on_terminal(),
                   engine=args.engine)
    if not result.records:
        more = f" (and {len(result.skipped) - 1} more)" if len(result.skipped) > 1 else ""
        first = result.skipped[0] if result.skipped else "no hardware, method, context or batch"
        raise KvsimError(f"nothing to write: every combination was skipped: {first}{more}")
    for line in result.skipped:
        print(f"skipped {line}", file=sys.stderr)
    text = (to_csv(result.records) if fmt == "csv"
            else "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in result.records))
    if args.plot:  # drawn first: a plot that fails leaves --out untouched
        from ..plots import sweep_figure
        sweep_figure(result.records, args.plot, title=_title(result.records))
    if args.out:
        write_whole(args.out, text)
        print(f"wrote {len(result.records)} rows to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _title(records) -> str:
    models = sorted({r["model"] for r in records})
    gen = records[0].get("gen") or 0
    return f"{', '.join(models)}" + (f", {gen} generated tokens" if gen else "")
