"""Speed targets of the simulator (issue 2): `kvsim predict` from a cold start <= 0.5 s, and a
1,000,000-point (context x batch) dense cost + roofline sweep <= 2 s. Prints a table and, with
--out FILE.jsonl, appends one record with the machine, versions, date and command."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def cold_start_s(repeats: int) -> float:
    command = [sys.executable, "-m", "kvsim", "predict", "--hw", "h100", "--method", "dense", "--seq", "128k"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sweep_s(points: int, repeats: int) -> float:
    from kvsim.predict import predict
    side = int(round(points ** 0.5))
    seq = np.linspace(1, 1 << 20, side).round()[:, None]
    batch = np.arange(1, side + 1)[None, :]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pred = predict("h100", seq=seq, batch=batch)
        np.asarray(pred.latency_s).sum()
        times.append(time.perf_counter() - start)
    assert pred.latency_s.size == side * side
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="append the result as a JSON line")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {"cold_start_s": cold_start_s(args.repeats), "sweep_1m_s": sweep_s(1_000_000, args.repeats)}
    print(f"{'measure':<28}{'median':>10}{'target':>10}")
    print(f"{'kvsim predict cold start':<28}{results['cold_start_s']:>9.3f}s{0.5:>9.1f}s")
    print(f"{'1M-point dense sweep':<28}{results['sweep_1m_s']:>9.3f}s{2.0:>9.1f}s")
    if args.out:
        from kvsim.records import append_jsonl
        append_jsonl(args.out, [dict(results, machine=platform.processor() or platform.machine(),
                                     cpus=os.cpu_count(), python=platform.python_version(),
                                     numpy=np.__version__, date=datetime.date.today().isoformat(),
                                     command=" ".join(["python"] + sys.argv))])


if __name__ == "__main__":
    main()
