"""kvsim plan: what fits, how fast and at what price, for every hardware × GPU count × method."""
from __future__ import annotations

import sys
from collections import defaultdict

from .. import outfile
from ..errors import KvsimError
from ..quality import DEFAULT_BENCHMARK, parse_benchmark, parse_floor
from ..report import UNITS_NOTE, table
from ..units import format_bytes, format_seconds, format_tokens
from .common import (ANSWER, NO_FIT, add_engine_arg, add_model_args, dump_json, parse_params, positive_float,
                     positive_int, tokens)
from .sweep import count_list, hardware_list, method_list

QUALITY_NOTE = ("quality: published score relative to dense on the benchmark for this model, context and "
                "budget (kvsim/methods/*/quality.yaml; --format json shows the source); 'exact': the whole context "
                "is kept; 'unknown*': a lossy method with no close published setting (kvsim predict "
                "--method NAME shows the nearest); --quality-floor F keeps exact and known >= F")


def register(sub) -> None:
    parser = sub.add_parser("plan", help="capacity planning: fit, max batch, speed and $ per million tokens")
    parser.add_argument("--seq", type=tokens, help="steady-state decode: context per sequence, 32k, 128k")
    parser.add_argument("--prompt", type=tokens, help="whole requests: prompt tokens (with --gen)")
    parser.add_argument("--gen", type=tokens, help="whole requests: generated tokens per request (with --prompt)")
    parser.add_argument("--tpot-ms", type=positive_float, help="time-per-output-token objective in milliseconds")
    parser.add_argument("--ttft-ms", type=positive_float, help="time-to-first-token objective in milliseconds (requests)")
    parser.add_argument("--batch", type=positive_int, help="evaluate at this batch instead of the largest: 8, 1k")
    parser.add_argument("--method", default="all", help="'all' (default) or names: dense,quest")
    parser.add_argument("--hw", default="all", help="'all' GPU profiles (default) or names: h100,l40s")
    parser.add_argument("--gpus", type=count_list, default=[1, 2, 4, 8], help="tensor-parallel counts (default 1,2,4,8)")
    parser.add_argument("--prices", help="YAML of per-GPU hourly prices replacing the shipped ones by name")
    parser.add_argument("--quality-floor", type=parse_floor, metavar="F",
                        help="keep options whose published quality relative to dense is >= F in [0, 1]; unknown is excluded")
    parser.add_argument("--quality-benchmark", default=DEFAULT_BENCHMARK, type=parse_benchmark,
                        help=f"benchmark the quality column and floor use (default {DEFAULT_BENCHMARK}; kvsim/methods/*/quality.yaml)")
    add_model_args(parser)
    add_engine_arg(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--plot", help="cost against time per output token with the objective (PNG; .pdf, .svg by suffix)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.plot:
        outfile.check_plot(args.plot)
    seq, gen = _shape(args)
    rows = _ranked_with_quality(args, seq, gen)
    kept = [o for o, _, why in rows if not why]
    if args.format == "json":
        print(dump_json([{**o.as_dict(), "quality": q.as_dict(), "excluded": why or None} for o, q, why in rows]))
    else:
        print(plan_text(kept, args.model, seq, args.tpot_ms, args.prices, gen, args.ttft_ms,
                        {o.method: q for o, q, _ in rows}, list(dict.fromkeys(why for _, _, why in rows if why)),
                        args.quality_floor))
    if args.plot:
        from ..plots import plan_figure
        shape = f"{format_tokens(seq)} prompt + {format_tokens(gen)} generated" if gen else f"{format_tokens(seq)} context"
        try:
            plan_figure(kept, args.tpot_ms, args.plot, title=f"{args.model}, {shape}")
        except KvsimError as exc:  # nothing to draw is an answer ("no option"), not a mistake
            print(f"no plot written: {exc}", file=sys.stderr)
            return NO_FIT
    if not any(o.meets_slo for o in kept):
        print("no option fits" + (" and meets the objective" if args.tpot_ms else "") + _why_none_fits(kept),
              file=sys.stderr)
        return NO_FIT
    return ANSWER


def _ranked_with_quality(args, seq: int, gen: int) -> list[tuple]:
    """(option, quality, why excluded or ''), ranked: an option whose method is below the
    quality floor (or of unknown quality under one) counts as missing the objective."""
    from ..plan import option_table, rank
    from ..quality import plan_quality

    params = parse_params(args.param)
    table = option_table(args.model, seq, hardware_list(args.hw), method_list(args.method), args.gpus,
                         args.tpot_ms, args.batch, args.prices, args.dtype, args.kv_dtype, params, gen,
                         args.ttft_ms, args.engine)
    options = table.options()
    found, keep, why = plan_quality(options, args.model, seq + gen, params, args.quality_benchmark,
                                    args.quality_floor)
    quality = {o.method: q for o, q in zip(options, found)}
    excluded = {o.method: w for o, w in zip(options, why)}
    return [(o, quality[o.method], excluded[o.method]) for o in rank(table, keep=keep).options()]


def _shape(args) -> tuple[int, int]:
    """(context or prompt, generated tokens): --seq alone, or --prompt with --gen."""
    for flag in ("tpot_ms", "ttft_ms"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            raise KvsimError(f"--{flag.replace('_', '-')} must be a positive number of milliseconds, got {value}")
    if (args.seq is None) == (args.prompt is None):
        raise KvsimError("give --seq (steady-state decode) or --prompt with --gen (whole requests)")
    if (args.prompt is None) != (args.gen is None):
        raise KvsimError("--prompt and --gen go together: a request's prompt and generated tokens")
    if args.ttft_ms is not None and args.gen is None:
        raise KvsimError("--ttft-ms needs whole requests: give --prompt and --gen")
    return (args.seq, 0) if args.prompt is None else (args.prompt, args.gen)


def _money(value, digits=2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _seconds_range(value, low, high) -> str:
    """``49.9 ms (47.5–52.6)``: the unit once where the bounds share the value's."""
    texts = [format_seconds(v) for v in (value, low, high)]
    one_unit = len({t.rsplit(" ", 1)[-1] for t in texts}) == 1
    return f"{texts[0]} ({'–'.join(t.rsplit(' ', 1)[0] if one_unit else t for t in texts[1:])})"


def _money_range(value, low, high) -> str:
    return _money(value, 3) if value is None else f"{_money(value, 3)} ({low:,.3f}–{high:,.3f})"


def _batch_range(o) -> str:
    return str(o.batch) if o.batch_low == o.batch_high else f"{o.batch} ({o.batch_low}–{o.batch_high})"


def _row(o, quality, request: bool) -> list:
    cell = quality[o.method].cell() if o.method in quality else "-"
    ttft = [format_seconds(o.ttft_s)] if request else []
    return ["*" if o.cheapest else "", o.hw, o.gpus, o.method, o.max_batch, _batch_range(o),
            _seconds_range(o.tpot_s, o.tpot_s_low, o.tpot_s_high), *ttft, f"{o.tokens_per_s:,.0f}",
            _money(o.usd_per_hour), _money_range(o.usd_per_mtok, o.usd_per_mtok_low, o.usd_per_mtok_high),
            format_bytes(o.memory_bytes), "yes" if o.meets_slo else "no", cell + ("*" if cell == "unknown" else "")]


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


def _heading(model: str, seq: int, gen: int, tpot_ms, ttft_ms) -> str:
    goals = [f"TPOT <= {tpot_ms:g} ms"] if tpot_ms else []
    goals += [f"TTFT <= {ttft_ms:g} ms"] if ttft_ms else []
    goal = " and ".join(goals) or "no TPOT objective"
    if not gen:
        return f"{model} at {format_tokens(seq)} context, steady-state decode (prefill not counted), {goal}"
    return (f"{model}, requests of {format_tokens(seq)} prompt + {format_tokens(gen)} generated tokens "
            f"(prefill and decode counted, TPOT the mean decode step), {goal}")


def plan_text(options, model: str, seq: int, tpot_ms: float | None, prices_file: str | None = None,
              gen: int = 0, ttft_ms: float | None = None, quality: dict | None = None,
              excluded: list[str] = (), floor: float | None = None) -> str:
    fitting = [o for o in options if o.fits]
    meeting = [o for o in fitting if o.meets_slo]
    head = (f"{_heading(model, seq, gen, tpot_ms, ttft_ms)}: "
            f"{len(options)} options, {len(fitting)} fit, {len(meeting)} meet the objective\n")
    header = ["", "hw", "gpus", "method", "max batch", "batch", "TPOT", *(["TTFT"] if gen else []),
              "tokens/s", "$/hour", "$/M tokens", "memory/GPU", "meets", "quality"]
    quality = quality or {}
    head += f"{UNITS_NOTE}\n"
    lines = [head, table([_row(o, quality, gen > 0) for o in fitting], header) if fitting else "nothing fits", ""]
    best = next((o for o in options if o.cheapest), None)
    if best:
        lines.append(f"* cheapest meeting the objective: {best.hw} x{best.gpus} with {best.method} at batch "
                     f"{best.batch}: {_money(best.usd_per_mtok, 3)} per million output tokens")
    lines += _not_fitting(options)
    source = f"{prices_file} over kvsim/prices.yaml" if prices_file else "kvsim/prices.yaml"
    lines += ["ranges: 90% intervals from validation residuals of each profile's trust class (measured, "
              "same-architecture, other-architecture); batch: the largest meeting the objective at the "
              "interval's slow and fast ends; --format json has the low/high fields"]
    lines += [f"prices: on-demand USD per GPU-hour from {source} (provider, page and date per GPU: "
              "--format json shows price_source); '-' = no price for that hardware", QUALITY_NOTE]
    if floor is not None:
        bench = next(iter(quality.values())).benchmark if quality else ""
        lines += [f"quality floor {floor:g} on {bench}: excluded {len(excluded)} method(s)"] + [f"  {why}" for why in excluded]
    return "\n".join(lines)


def _why_none_fits(options) -> str:
    """Where no option fits at all: the first reason given (heads that do not split, ...)."""
    why = list(dict.fromkeys(o.note for o in options if o.note))
    if not why or any(o.fits for o in options):
        return ""
    return f": {why[0]}" + (f" (and {len(why) - 1} more reasons)" if len(why) > 1 else "")
