"""The host link as the offloaded runtime uses it (runtime/offload.py), for a profile's
``host_link.copy_efficiency`` and ``host_link.gather_efficiency`` (kvsim/hardware.py):
  copy    pinned host <-> device copies (cudaMemcpyAsync through torch, non_blocking), h2d and
          d2h, against bytes per copy, 4 KB … 1 GB
  gather  kernels/host_gather.py reading rows of pinned host memory in place (zero-copy) into
          HBM, against bytes per row (2 B: an fp16 scale, … 1 KB) and rows per launch
Each case: the median of CUDA-event timings of back-to-back calls (copies and launches in a
stream, as the runtime issues them). Rates are bytes moved / time; efficiencies against the
profile's ``h2d_Bps`` / ``d2h_Bps``. On a CUDA GPU:
    python3 benchmarks/bench_pcie.py --out $OUT/h100-pcie.jsonl [--hw h100]
Anywhere, the profile curves from such a file:
    python3 benchmarks/bench_pcie.py --fit benchmarks/results/h100-pcie.jsonl --hw h100 [--yaml]
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

COPY_BYTES = [2 ** p for p in range(12, 31, 2)]  # 4 KB … 1 GB
ROW_BYTES = [2, 64, 128, 256, 512, 1024]  # fp16 scale; int8 d=64/128; bf16 d=64/128/256 rows
ROWS = [1024, 16384, 262144]  # gathered rows per launch
HOST_ROWS = 1 << 20  # rows of the pinned table the gathers pick from (> any L2)


def _time(fn, repeats):
    import torch
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def copy_cases(env):
    import torch
    rows = []
    for size in COPY_BYTES:
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(size, dtype=torch.uint8, device="cuda")
        repeats = 30 if size < 2 ** 26 else 8
        for direction, fn in (("h2d", lambda: dev.copy_(host, non_blocking=True)),
                              ("d2h", lambda: host.copy_(dev, non_blocking=True))):
            t = _time(fn, repeats)
            rows.append({**env, "kind": "copy", "direction": direction, "bytes": size, "time_s": t,
                         "Bps": size / t})
            print(f"copy {direction} {size:>11d} B  {t * 1e6:9.1f} us  {size / t / 1e9:6.2f} GB/s", flush=True)
        del host, dev
    return rows


def gather_cases(env):
    import torch
    from kvsim.kernels.host_gather import gather_host_rows
    rows = []
    for row in ROW_BYTES:
        tail = () if row == 2 else (row // 2,)
        host = torch.empty(HOST_ROWS, 1, 1, *tail, dtype=torch.float16, pin_memory=True)
        dev = torch.zeros(1, 1, 1, *tail, dtype=torch.float16, device="cuda")  # no ring rows picked
        for n in ROWS:
            idx = torch.randperm(HOST_ROWS, device="cuda")[:n].int().view(1, 1, n)
            out = torch.empty(1, 1, n, *tail, dtype=torch.float16, device="cuda")
            t = _time(lambda: gather_host_rows(host, dev, idx, HOST_ROWS, out=out), 20)
            moved = n * row
            rows.append({**env, "kind": "gather", "direction": "h2d", "row_bytes": row, "rows": n,
                         "bytes": moved, "time_s": t, "Bps": moved / t})
            print(f"gather {row:5d} B x {n:7d} rows  {t * 1e6:9.1f} us  {moved / t / 1e9:6.2f} GB/s", flush=True)
        del host
    return rows


def _gather_line(records):
    """Per bytes per row, least squares of time = t0 + rows·b over its rows per launch:
    {row_bytes: (t0, seconds per row)} (rows measured at one count only: t0 = 0)."""
    import numpy as np
    out = {}
    for row in sorted({r["row_bytes"] for r in records}):
        pts = sorted((r["rows"], r["time_s"]) for r in records if r["row_bytes"] == row)
        x, y = np.array(pts, dtype=float).T
        if len(set(x)) < 2:
            out[row] = (0.0, float(y[-1] / x[-1]))
            continue
        t0, b = np.linalg.lstsq(np.c_[np.ones_like(x), x], y, rcond=None)[0]
        out[row] = (max(float(t0), 0.0), float(b))
    return out


def fit(records, hw_name) -> dict:
    """Profile curves: copy efficiency (the slower direction) by bytes per copy; gather
    efficiency by bytes per row from the slope of time against rows per launch: the rate past
    the fixed time of one timed call (``gather_launch_s``, the median intercept, ~30 us on an
    H100: the host issuing one Triton launch inside the events, absent from CUDA-graph
    replays; reported, not a profile field)."""
    from kvsim.profiles import load_profile
    link = load_profile(hw_name).host_link
    peak = {"h2d": link.h2d_Bps.value, "d2h": link.d2h_Bps.value}
    copy = {}
    for r in records:
        if r["kind"] == "copy":
            eff = r["Bps"] / peak[r["direction"]]
            copy[r["bytes"]] = min(eff, copy.get(r["bytes"], 1.0))
    gathers = [r for r in records if r["kind"] == "gather"]
    most = max((r["rows"] for r in gathers), default=0)
    line = _gather_line(gathers)
    gather = {row: row / b / peak["h2d"] for row, (_, b) in line.items()}
    launch = statistics.median([t0 for t0, _ in line.values()]) if line else 0.0
    clip = lambda e: round(min(max(e, 1e-4), 1.0), 4)  # noqa: E731
    return {"copy_efficiency": [[b, clip(e)] for b, e in sorted(copy.items())],
            "gather_efficiency": [[b, clip(e)] for b, e in sorted(gather.items())], "gather_rows": most,
            "gather_launch_s": float(f"{launch:.3g}")}


def profile_yaml(fitted: dict, path: str) -> str:
    """The two host_link fields, ready to paste into a profile."""
    src = f"measured: benchmarks/bench_pcie.py, {os.path.basename(path)}"
    return (f"  copy_efficiency: {{points: {fitted['copy_efficiency']}, source: \"{src}: pinned copies, "
            f"the slower of h2d and d2h by bytes per copy\"}}\n"
            f"  gather_efficiency: {{points: {fitted['gather_efficiency']}, source: \"{src}: "
            f"kernels/host_gather.py reading up to {fitted['gather_rows']} pinned rows, by bytes per row: the "
            f"slope of time against rows per launch (intercept {fitted['gather_launch_s']} s a call)\"}}")


def write_profile(fitted: dict, hw_name: str, out: str, source_file: str) -> None:
    """The device's profile (its calibrated one where shipped) with the two link curves added,
    for ``kvsim validate --hw OUT``."""
    from pathlib import Path

    import yaml

    from kvsim.profiles import load_profile
    from kvsim.yamlfile import read_mapping
    name = load_profile(hw_name).name
    root = Path(__file__).resolve().parents[1] / "hw_profiles"
    base = root / f"{name}.calibrated.yaml"
    base = base if base.exists() else root / f"{name}.yaml"
    data = read_mapping(base, "hardware profile")
    src = f"measured: benchmarks/bench_pcie.py, {os.path.basename(source_file)}"
    data["host_link"]["copy_efficiency"] = {"points": fitted["copy_efficiency"], "source": src}
    data["host_link"]["gather_efficiency"] = {"points": fitted["gather_efficiency"], "source": src}
    Path(out).write_text(yaml.safe_dump(data, sort_keys=False))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="append records to this JSONL file")
    parser.add_argument("--fit", help="print profile curves from this JSONL file")
    parser.add_argument("--hw", default="h100", help="profile whose link peaks the efficiencies use")
    parser.add_argument("--yaml", action="store_true", help="with --fit: the profile fields as YAML")
    parser.add_argument("--profile-out", help="with --fit: write --hw's profile with the fitted link curves here")
    parser.add_argument("--skip-copy", action="store_true")
    args = parser.parse_args()
    if args.fit:
        try:
            with open(args.fit) as f:
                records = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as exc:
            print(f"bench_pcie: cannot read {args.fit}: {exc}", file=sys.stderr)
            sys.exit(2)
        fitted = fit(records, args.hw)
        print(json.dumps(fitted) if not args.yaml else profile_yaml(fitted, args.fit))
        if args.profile_out:
            write_profile(fitted, args.hw, args.profile_out, args.fit)
        return
    import torch
    if not torch.cuda.is_available():
        print("bench_pcie: needs a CUDA GPU (or --fit FILE)", file=sys.stderr)
        sys.exit(2)
    from benchmarks.bench_kernels import environment
    from kvsim.records import append_jsonl
    env = environment()
    rows = ([] if args.skip_copy else copy_cases(env)) + gather_cases(env)
    if args.out:
        append_jsonl(args.out, rows)


if __name__ == "__main__":
    main()
