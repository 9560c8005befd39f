"""kvsim validate FILE.jsonl ... and kvsim calibrate FILE.jsonl --hw H [--out PROFILE.yaml]."""
from __future__ import annotations

import math
import sys

from .. import outfile
from ..errors import KvsimError
from ..records import measured_records, read_jsonl, write_whole
from ..report import table
from ..roofline import ENGINES
from .common import ANSWER, dump_json, fraction


def register(sub) -> None:
    val = sub.add_parser("validate", help="kvsim's prediction error against measured records")
    val.add_argument("files", nargs="+", help="JSONL files written by kvsim measure (or, executed schedules, "
                                             "by benchmarks/measure_schedule.py)")
    val.add_argument("--hw", help="predict on this profile instead of each record's device's shipped profile")
    val.add_argument("--transfer-from", metavar="PROFILE",
                     help="leave one device out: each record's device with every law transferred from PROFILE")
    val.add_argument("--by", default="method", help="group rows by these of method,model,device,trust (default method)")
    val.add_argument("--held-out", type=fraction, metavar="FRACTION",
                     help="only the configurations a calibration with this hold-out fraction did not see")
    val.add_argument("--engine", choices=ENGINES, default="graphs",
                     help="graphs: the CUDA-graph replay timings (default); eager: the runtime's eager "
                          "timings against kvsim's eager engine")
    val.add_argument("--format", choices=("table", "json"), default="table")
    val.add_argument("--plot", help="predicted against measured latency (PNG; .pdf, .svg by suffix)")
    val.set_defaults(run=run_validate)
    cal = sub.add_parser("calibrate", help="fit a profile's memory curve and launch floor to measurements, "
                                           "or (--intervals) the prediction intervals")
    cal.add_argument("files", nargs="+")
    cal.add_argument("--hw", help="the device whose profile gets the measured fields")
    cal.add_argument("--out", help="where to write the profile (default: the device's own profile file; "
                                   "with --intervals the shipped residual quantiles)")
    cal.add_argument("--holdout", type=fraction, default=0.3, help="fraction of configurations held out, in [0, 1) (default 0.3)")
    cal.add_argument("--methods", help="fit only on these methods (comma-separated), e.g. dense: the "
                                       "hardware's efficiency from its best kernels, so the other methods' errors stay visible")
    cal.add_argument("--intervals", action="store_true",
                     help="write the residual quantiles of step latency per trust class (kvsim.intervals)")
    cal.add_argument("--machine-repeat", action="append", default=[], metavar="REPEAT=ORIGINAL",
                     help="with --intervals: a file of configurations measured again on another machine of "
                          "the device, and the file of the first; their offset widens every interval")
    cal.set_defaults(run=run_calibrate)


def _load(files) -> list[dict]:
    records = measured_records(files)
    if not records:
        raise KvsimError(f"no measured records (source: measured) in {', '.join(files)}")
    return records


def _max_batch_records(files) -> list[dict]:
    """benchmarks/bench_memory.py's ``kind: max_batch`` records among the files."""
    return [r for path in files for r in read_jsonl(path) if r.get("kind") == "max_batch"]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cell(stats: dict) -> str:
    worst = stats["worst"]
    return f"{_pct(stats['median_abs_err'])} / {_pct(stats['p90_abs_err'])} / {_pct(worst['err'] if worst else None)}"


def summary_table(summary: dict, key: str = "groups") -> str:
    rows = []
    blocks = summary.get(key) or summary["methods"]
    for name, block in [*blocks.items(), ("in targets", summary["targets"]), ("overall", summary["overall"])]:
        rows.append([name, block["n"], _cell(block["latency"]), _pct(block["interval_coverage"]),
                     *(_cell(block[q]) for q in ("attention_latency", "hbm_bytes", "pcie_bytes", "memory_bytes"))])
    header = ["group", "n", "latency med/p90/worst", "in 90%", "attention", "HBM bytes", "PCIe bytes", "memory"]
    return table(rows, header)


def _max_batch_text(checks: list) -> str:
    return "\n".join(f"max batch {m['model']} {m['method']} S={m['seq']} on {m['hw']}: batch {m['ran']} runs, "
                     f"{m['out_of_memory']} runs out of memory; kvsim fits {m['predicted']} "
                     f"(kvsim's allocation at {m['ran']}: {100 * m['allocation_err']:+.1f}%)" for m in checks)


def _by(text: str) -> tuple:
    from ..validate import GROUP_KEYS
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys or any(k not in GROUP_KEYS for k in keys):
        raise KvsimError(f"--by takes some of {', '.join(GROUP_KEYS)}, got {text!r}")
    return keys


def run_validate(args) -> int:
    from ..calibrate import is_held_out
    from ..memory_checks import max_batch_checks
    from ..validate import compare, summarize

    if args.plot:
        outfile.check_plot(args.plot)
    by = _by(args.by)
    checks = max_batch_checks(_max_batch_records(args.files))
    steps = measured_records(args.files)  # the per-step records, read once
    if checks and not steps:
        print(dump_json({"max_batch": checks}) if args.format == "json" else _max_batch_text(checks))
        return ANSWER
    executed = measured_records(args.files, kind="schedule")
    if executed:
        from ..schedule.validate import compare as compare_schedules, text as schedule_text
        found = compare_schedules(executed)
        print(dump_json({"schedule": found}) if args.format == "json" else schedule_text(found))
        if not steps:
            return ANSWER
    records = steps or _load(args.files)  # _load refuses files with none
    if args.held_out is not None:
        records = [r for r in records if is_held_out(r, args.held_out)]
        if not records:
            raise KvsimError(f"none of the measured records is held out at --held-out {args.held_out:g}")
    skipped: list = []
    rows = compare(records, args.hw, skipped, transfer_from=args.transfer_from, engine=args.engine)
    summary = summarize(rows, by)
    summary.update(engine=args.engine, max_batch=checks)
    summary["skipped"] = [{"method": r["method"], "seq": r["seq"], "batch": r["batch"], "why": why}
                          for r, why in skipped]
    if args.plot:
        from ..validate import plot
        plot(rows, args.plot)
    if args.format == "json":
        print(dump_json(summary))
    else:
        print(f"engine {args.engine}: relative error (predicted - measured) / measured, absolute: median / p90 / "
              "worst (signed); in 90%: measured step latencies inside the predicted 90% interval; memory: "
              "kvsim's allocations against the runtime's peak allocation\n")
        print(summary_table(summary))
        for r, why in skipped:
            print(f"skipped {r['method']} S={r['seq']} B={r['batch']}: {why}")
        if checks:
            print(_max_batch_text(checks))
    return ANSWER


def _same_device(records: list[dict], profile) -> None:
    """Calibrating one device's profile from another's measurements is refused."""
    names = {profile.name, *profile.aliases}
    others = sorted({str(r.get("hw")) for r in records} - names)
    if others:
        raise KvsimError(f"the records were measured on {', '.join(others)}, not {profile.name}; "
                         f"pass --hw {others[0]} or only that device's files")


def run_calibrate(args) -> int:
    if args.machine_repeat and not args.intervals:
        raise KvsimError("--machine-repeat goes with --intervals (it widens the prediction intervals)")
    if args.intervals:
        return _write_intervals(args)
    if not args.hw:
        raise KvsimError("kvsim calibrate needs --hw (the device whose profile gets the measured fields)")
    from ..calibrate import fit, patch_profile_text
    from ..profiles import forget_loaded, load_profile, profile_file
    from ..validate import compare, summarize

    if args.holdout >= 1:
        raise KvsimError(f"--holdout must be below 1 (some configurations must be fitted), got {args.holdout:g}")
    source = profile_file(args.hw)
    out = args.out or str(source)
    outfile.check(out, "--out")
    records = _load(args.files)
    if args.methods:
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
        records = [r for r in records if r.get("method") in chosen]
        if not records:
            raise KvsimError(f"no measured record of --methods {args.methods}")
    _same_device(records, load_profile(args.hw))
    fields, train, held = fit(records, args.hw, list(args.files), args.holdout)
    write_whole(out, patch_profile_text(source.read_text(), fields))
    forget_loaded()
    print(f"wrote the measured fields into {out}: fitted on {len(train)} configurations, {len(held)} held out")
    if held:
        print("\nheld-out error with the calibrated profile:\n")
        skipped: list = []
        print(summary_table(summarize(compare(held, load_profile(out), skipped))))
        for r, why in skipped:
            print(f"skipped {r['method']} S={r['seq']} B={r['batch']}: {why}", file=sys.stderr)
    return ANSWER


def _repeat_pair(pair: str) -> tuple[list[dict], list[dict]]:
    """REPEAT=ORIGINAL: the two files' measured records."""
    repeat, sep, original = pair.partition("=")
    if not sep or not repeat or not original:
        raise KvsimError(f"--machine-repeat wants REPEAT=ORIGINAL (two files), got {pair!r}")
    return measured_records([repeat]), measured_records([original])


def _write_intervals(args) -> int:
    import yaml

    from ..calibrate import interval_classes, machine_offsets
    from ..intervals import document, residuals_file

    _load(args.files)  # refuses files with no measured record
    machines = machine_offsets({pair: _repeat_pair(pair) for pair in args.machine_repeat})
    classes = interval_classes({path: measured_records([path]) for path in args.files}, machines)
    if not classes:
        raise KvsimError("no records of a device with a measured profile in the given files")
    out = args.out or str(residuals_file())
    command = "kvsim calibrate --intervals " + " ".join(args.files) + "".join(
        f" --machine-repeat {pair}" for pair in args.machine_repeat)
    for pair, offset in machines.items():
        print(f"{pair}: the repeat's machine takes {math.exp(offset):.3f}x the original's step latency (median)")
    write_whole(out, yaml.safe_dump(document(classes, command), sort_keys=False, width=120))
    for name, q in classes.items():
        for label, part in [(name, q)] + [(f"{name} {d}", v) for d, v in q.get("devices", {}).items()]:
            print(f"{label}: 90% of log(measured/predicted) in [{part['q_low']:+.3f}, {part['q_high']:+.3f}] "
                  f"over {part['n']} records" + (f" (no records: {q['from']}'s)" if not part["n"] else ""))
    print(f"wrote {out}")
    return ANSWER
