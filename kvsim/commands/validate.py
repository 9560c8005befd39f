"""kvsim validate FILE.jsonl ... and kvsim calibrate FILE.jsonl --hw H --out PROFILE.yaml."""
from __future__ import annotations

import sys

from .. import outfile
from ..errors import KvsimError
from ..records import measured_records, write_whole
from ..roofline import ENGINES
from ..report import table
from .common import ANSWER, dump_json, fraction


def register(sub) -> None:
    val = sub.add_parser("validate", help="kvsim's prediction error against measured records")
    val.add_argument("files", nargs="+", help="JSONL files written by kvsim measure")
    val.add_argument("--hw", help="predict on this profile instead of each record's device's "
                                  "(its calibrated profile where one ships, else the datasheet one)")
    val.add_argument("--held-out", type=fraction, metavar="FRACTION",
                     help="only the configurations a calibration with this hold-out fraction did not see")
    val.add_argument("--engine", choices=ENGINES, default="graphs",
                     help="graphs: the CUDA-graph replay timings (default); eager: the runtime's eager "
                          "timings against kvsim's eager engine")
    val.add_argument("--format", choices=("table", "json"), default="table")
    val.add_argument("--plot", help="predicted against measured latency (PNG; .pdf, .svg by suffix)")
    val.set_defaults(run=run_validate)
    cal = sub.add_parser("calibrate", help="fit a profile's efficiency curve and launch floor to measurements")
    cal.add_argument("files", nargs="+")
    cal.add_argument("--hw", required=True)
    cal.add_argument("--out", required=True, help="where to write the calibrated YAML profile")
    cal.add_argument("--holdout", type=fraction, default=0.3, help="fraction of configurations held out, in [0, 1) (default 0.3)")
    cal.add_argument("--methods", help="fit only on these methods (comma-separated), e.g. dense: the "
                                       "hardware's efficiency from its best kernels, so the other methods' errors stay visible")
    cal.set_defaults(run=run_calibrate)


def _load(files) -> list[dict]:
    records = measured_records(files)
    if not records:
        raise KvsimError(f"no measured records (source: measured) in {', '.join(files)}")
    return records


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(summary: dict) -> str:
    rows = []
    for name, block in [*summary["methods"].items(), ("overall", summary["overall"])]:
        row = [name, block["n"]]
        for quantity in ("latency", "attention_latency", "hbm_bytes", "pcie_bytes"):
            stats = block[quantity]
            worst = stats["worst"]
            row.append(f"{_pct(stats['median_abs_err'])} / {_pct(stats['p90_abs_err'])} / "
                       f"{_pct(worst['err'] if worst else None)}")
        rows.append(row)
    header = ["method", "n", "latency med/p90/worst", "attention", "HBM bytes", "PCIe bytes"]
    return table(rows, header)


def run_validate(args) -> int:
    from ..calibrate import is_held_out
    from ..hardware import load_profile
    from ..validate import compare, summarize

    if args.plot:
        outfile.check_plot(args.plot)
    hw = load_profile(args.hw) if args.hw else None
    records = _load(args.files)
    if args.held_out is not None:
        records = [r for r in records if is_held_out(r, args.held_out)]
        if not records:
            raise KvsimError(f"none of the measured records is held out at --held-out {args.held_out:g}")
    skipped: list = []
    rows = compare(records, hw, skipped, engine=args.engine)
    summary = summarize(rows)
    summary["engine"] = args.engine
    summary["skipped"] = [{"method": r["method"], "seq": r["seq"], "batch": r["batch"], "why": why}
                          for r, why in skipped]
    if args.plot:
        from ..validate import plot
        plot(rows, args.plot)
    if args.format == "json":
        print(dump_json(summary))
    else:
        print(f"engine {args.engine}: relative error (predicted - measured) / measured, absolute: "
              "median / p90 / worst (signed)\n")
        print(summary_table(summary))
        for r, why in skipped:
            print(f"skipped {r['method']} S={r['seq']} B={r['batch']}: {why}")
    return ANSWER


def _same_device(records: list[dict], profile) -> None:
    """Calibrating one device's profile from another's measurements is refused."""
    names = {profile.name, profile.name.removesuffix(".calibrated"), *profile.aliases}
    others = sorted({str(r.get("hw")) for r in records} - names)
    if others:
        raise KvsimError(f"the records were measured on {', '.join(others)}, not {profile.name}; "
                         f"pass --hw {others[0]} or only that device's files")


def run_calibrate(args) -> int:
    import yaml

    from ..calibrate import fit
    from ..hardware import load_profile
    from ..validate import compare, summarize

    if args.holdout >= 1:
        raise KvsimError(f"--holdout must be below 1 (some configurations must be fitted), got {args.holdout:g}")
    outfile.check(args.out, "--out")
    profile = load_profile(args.hw)
    records = _load(args.files)
    if args.methods:
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
        records = [r for r in records if r.get("method") in chosen]
        if not records:
            raise KvsimError(f"no measured record of --methods {args.methods}")
    _same_device(records, profile)
    profile, train, held = fit(records, profile, list(args.files), args.holdout)
    data = profile.model_dump(exclude_none=True)
    write_whole(args.out, "# written by kvsim calibrate; fitted fields say so in their source\n"
                + yaml.safe_dump(data, sort_keys=False, width=120))
    print(f"wrote {args.out}: fitted on {len(train)} configurations, {len(held)} held out")
    if held:
        skipped: list = []
        print("\nheld-out error with the calibrated profile:\n")
        print(summary_table(summarize(compare(held, profile, skipped))))
        for r, why in skipped:
            print(f"skipped {r['method']} S={r['seq']} B={r['batch']}: {why}", file=sys.stderr)
    return ANSWER
