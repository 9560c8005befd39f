"""kvsim plan: what fits, how fast and at what price, for every hardware × GPU count × method."""
from __future__ import annotations

import sys
from collections import defaultdict

from .. import outfile
from ..errors import KvsimError
from ..report import UNITS_NOTE, table
from ..units import format_bytes, format_seconds, format_tokens
from .common import (ANSWER, NO_FIT, add_model_args, dump_json, on_terminal, parse_params, positive_float,
                     positive_int, tokens)
from .sweep import count_list, hardware_list, method_list

ACCURACY_NOTE = ("kvsim predicts cost, not accuracy: methods that evict tokens keep a fixed window "
                 "(e.g. streamingllm: sinks + recent tokens) and answer a different question than dense.")


def register(sub) -> None:
    parser = sub.add_parser("plan", help="capacity planning: fit, max batch, speed and $ per million tokens")
    parser.add_argument("--seq", type=tokens, required=True, help="context per sequence: 32k, 128k")
    parser.add_argument("--tpot-ms", type=positive_float, help="time-per-output-token objective in milliseconds")
    parser.add_argument("--batch", type=positive_int, help="evaluate at this batch instead of the largest: 8, 1k")
    parser.add_argument("--method", default="all", help="'all' (default) or names: dense,quest")
    parser.add_argument("--hw", default="all", help="'all' GPU profiles (default) or names: h100,l40s")
    parser.add_argument("--gpus", type=count_list, default=[1, 2, 4, 8], help="tensor-parallel counts (default 1,2,4,8)")
    parser.add_argument("--prices", help="YAML of per-GPU hourly prices replacing the shipped ones by name")
    add_model_args(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--plot", help="cost against time per output token with the objective (PNG; .pdf, .svg by suffix)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..plan import plan

    if args.plot:
        outfile.check_plot(args.plot)
    options = plan(args.model, args.seq, hardware_list(args.hw), method_list(args.method), args.gpus,
                   args.tpot_ms, args.batch, args.prices, args.dtype, args.kv_dtype,
                   parse_params(args.param), progress=on_terminal())
    if args.format == "json":
        print(dump_json([o.as_dict() for o in options]))
    else:
        print(plan_text(options, args.model, args.seq, args.tpot_ms, args.prices))
    if args.plot:
        from ..plots import plan_figure
        try:
            plan_figure(options, args.tpot_ms, args.plot, title=f"{args.model} at {format_tokens(args.seq)} context")
        except KvsimError as exc:  # nothing to draw is an answer ("no option"), not a mistake
            print(f"no plot written: {exc}", file=sys.stderr)
            return NO_FIT
    if not any(o.meets_slo for o in options):
        print("no option fits" + (" and meets the objective" if args.tpot_ms else ""), file=sys.stderr)
        return NO_FIT
    return ANSWER


def _money(value, digits=2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _row(o) -> list:
    return ["*" if o.cheapest else "", o.hw, o.gpus, o.method, o.max_batch, o.batch,
            format_seconds(o.tpot_s), f"{o.tokens_per_s:,.0f}", _money(o.usd_per_hour),
            _money(o.usd_per_mtok, 3), format_bytes(o.memory_bytes), "yes" if o.meets_slo else "no"]


def _not_fitting(options) -> list[str]:
    """One line per reason, naming hardware × GPUs and the methods it hits."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    every = sorted({o.method for o in options})
    for o in options:
        if not o.fits:
            reason = "does not fit" if o.note.startswith("does not fit") or not o.note else o.note
            groups[reason][(o.hw, o.gpus)].append(o.method)
    lines = []
    for reason, where in groups.items():
        parts = [f"{hw} x{gpus}" + ("" if sorted(v) == every else f" ({', '.join(sorted(v))})")
                 for (hw, gpus), v in sorted(where.items())]
        lines.append(f"{reason}: {'; '.join(parts)}")
    return lines


def plan_text(options, model: str, seq: int, tpot_ms: float | None, prices_file: str | None = None) -> str:
    fitting = [o for o in options if o.fits]
    meeting = [o for o in fitting if o.meets_slo]
    goal = f"TPOT <= {tpot_ms:g} ms" if tpot_ms else "no TPOT objective"
    head = (f"{model} at {format_tokens(seq)} context, steady-state decode (prefill not counted), {goal}: "
            f"{len(options)} options, {len(fitting)} fit, {len(meeting)} meet the objective\n")
    header = ["", "hw", "gpus", "method", "max batch", "batch", "TPOT", "tokens/s", "$/hour",
              "$/M tokens", "memory/GPU", "meets"]
    head += f"{UNITS_NOTE}\n"
    lines = [head, table([_row(o) for o in fitting], header) if fitting else "nothing fits", ""]
    best = next((o for o in options if o.cheapest), None)
    if best:
        lines.append(f"* cheapest meeting the objective: {best.hw} x{best.gpus} with {best.method} at batch "
                     f"{best.batch}: {_money(best.usd_per_mtok, 3)} per million output tokens")
    lines += _not_fitting(options)
    source = f"{prices_file} over kvsim/prices.yaml" if prices_file else "kvsim/prices.yaml"
    lines += [f"prices: on-demand USD per GPU-hour from {source} (provider, page and date per GPU: "
              "--format json shows price_source); '-' = no price for that hardware", ACCURACY_NOTE]
    return "\n".join(lines)
