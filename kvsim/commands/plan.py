"""kvsim plan: what fits, how fast and at what price, for every hardware × GPU count × method."""
from __future__ import annotations

from collections import defaultdict

from ..errors import KvsimError
from ..quality import DEFAULT_BENCHMARK, parse_benchmark, parse_floor
from ..report import table
from ..units import format_bytes, format_seconds, format_tokens
from .common import add_engine_arg, add_model_args, dump_json, parse_params, positive_int, tokens
from .sweep import count_list, hardware_list, method_list

QUALITY_NOTE = ("quality: published score relative to dense on the benchmark for this model, context and "
                "budget (kvsim/data/quality.yaml; --format json shows the source); 'exact': the whole context "
                "is kept; 'unknown*': a lossy method with no close published setting (kvsim predict "
                "--method NAME shows the nearest); --quality-floor F keeps exact and known >= F")


def register(sub) -> None:
    parser = sub.add_parser("plan", help="capacity planning: fit, max batch, speed and $ per million tokens")
    parser.add_argument("--seq", type=tokens, required=True, help="context per sequence: 32k, 128k")
    parser.add_argument("--tpot-ms", type=float, help="time-per-output-token objective in milliseconds")
    parser.add_argument("--batch", type=positive_int, help="evaluate at this batch instead of the largest")
    parser.add_argument("--method", default="all", help="'all' (default) or names: dense,quest")
    parser.add_argument("--hw", default="all", help="'all' GPU profiles (default) or names: h100,l40s")
    parser.add_argument("--gpus", type=count_list, default=[1, 2, 4, 8], help="tensor-parallel counts (default 1,2,4,8)")
    parser.add_argument("--prices", help="YAML of per-GPU hourly prices replacing the shipped ones by name")
    parser.add_argument("--quality-floor", type=parse_floor, metavar="F",
                        help="keep options whose published quality relative to dense is >= F in [0, 1]; unknown is excluded")
    parser.add_argument("--quality-benchmark", default=DEFAULT_BENCHMARK, type=parse_benchmark,
                        help=f"benchmark the quality column and floor use (default {DEFAULT_BENCHMARK}; kvsim/data/quality.yaml)")
    add_model_args(parser)
    add_engine_arg(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--plot", help="cost against time per output token with the objective, PNG")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..plan import plan

    if args.tpot_ms is not None and not args.tpot_ms > 0:
        raise KvsimError(f"--tpot-ms must be a positive number of milliseconds, got {args.tpot_ms}")
    options = plan(args.model, args.seq, hardware_list(args.hw), method_list(args.method), args.gpus,
                   args.tpot_ms, args.batch, args.prices, args.dtype, args.kv_dtype,
                   parse_params(args.param), progress=True, engine=args.engine)
    rows = _with_quality(options, args)
    kept = [o for o, _, why in rows if not why]
    if args.format == "json":
        print(dump_json([{**o.as_dict(), "quality": q.as_dict(), "excluded": why or None} for o, q, why in rows]))
    else:
        print(plan_text(kept, args.model, args.seq, args.tpot_ms, args.prices, {o.method: q for o, q, _ in rows},
                        list(dict.fromkeys(why for _, _, why in rows if why)), args.quality_floor))
    if args.plot:
        from ..plots import plan_figure
        plan_figure(kept, args.tpot_ms, args.plot, title=f"{args.model} at {format_tokens(args.seq)} context")
    return 0


def _with_quality(options, args) -> list[tuple]:
    """(option, quality, why excluded or ''): the kept options re-ranked, then the excluded ones."""
    from dataclasses import replace

    from ..plan import rank
    from ..quality import plan_quality

    found, keep, why = plan_quality(options, args.model, args.seq, parse_params(args.param),
                                    args.quality_benchmark, args.quality_floor)
    by_method = {o.method: q for o, q in zip(options, found)}
    kept = rank([replace(o, cheapest=False) for o, k in zip(options, keep) if k])
    return ([(o, by_method[o.method], "") for o in kept]
            + [(replace(o, cheapest=False), q, w) for o, q, k, w in zip(options, found, keep, why) if not k])


def _money(value, digits=2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _row(o, quality) -> list:
    cell = quality[o.method].cell() if o.method in quality else "-"
    return ["*" if o.cheapest else "", o.hw, o.gpus, o.method, o.max_batch, o.batch,
            format_seconds(o.tpot_s), f"{o.tokens_per_s:,.0f}", _money(o.usd_per_hour),
            _money(o.usd_per_mtok, 3), format_bytes(o.memory_bytes), "yes" if o.meets_slo else "no",
            cell + ("*" if cell == "unknown" else "")]


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


def plan_text(options, model: str, seq: int, tpot_ms: float | None, prices_file: str | None = None,
              quality: dict | None = None, excluded: list[str] = (), floor: float | None = None) -> str:
    fitting = [o for o in options if o.fits]
    meeting = [o for o in fitting if o.meets_slo]
    goal = f"TPOT <= {tpot_ms:g} ms" if tpot_ms else "no TPOT objective"
    head = (f"{model} at {format_tokens(seq)} context, steady-state decode (prefill not counted), {goal}: "
            f"{len(options)} options, {len(fitting)} fit, {len(meeting)} meet the objective\n")
    header = ["", "hw", "gpus", "method", "max batch", "batch", "TPOT", "tokens/s", "$/hour",
              "$/M tokens", "memory/GPU", "meets", "quality"]
    quality = quality or {}
    lines = [head, table([_row(o, quality) for o in fitting], header) if fitting else "nothing fits", ""]
    best = next((o for o in options if o.cheapest), None)
    if best:
        lines.append(f"* cheapest meeting the objective: {best.hw} x{best.gpus} with {best.method} at batch "
                     f"{best.batch}: {_money(best.usd_per_mtok, 3)} per million output tokens")
    lines += _not_fitting(options)
    source = f"{prices_file} over kvsim/prices.yaml" if prices_file else "kvsim/prices.yaml"
    lines += [f"prices: on-demand USD per GPU-hour from {source} (provider, page and date per GPU: "
              "--format json shows price_source); '-' = no price for that hardware", QUALITY_NOTE]
    if floor is not None:
        bench = next(iter(quality.values())).benchmark if quality else ""
        lines += [f"quality floor {floor:g} on {bench}: excluded {len(excluded)} method(s)"] + [f"  {why}" for why in excluded]
    return "\n".join(lines)
