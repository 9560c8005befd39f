"""Speed target of the planner (issue 19): `kvsim plan --model llama-3.1-70b --seq 128k --tpot-ms 50`
(every GPU profile, method and GPU count) within 2x the cold-start time of `kvsim predict --hw
h100 --method sparq --seq 128k`, measured in one run: the two commands alternate (plan,
predict, plan, ...) after a warm-up pair, and each pair gives a ratio, so a machine whose
speed drifts affects both alike. Wall time and CPU time (user + sys of the child) are
recorded; on a shared machine CPU time is the steadier of the two. Prints a table and, with
--out FILE.jsonl, appends one record with the machine, versions, date and command. --tree
times another checkout of kvsim (e.g. the commit before a change; name it with --commit)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

PLAN = ["plan", "--model", "llama-3.1-70b", "--seq", "128k", "--tpot-ms", "50"]
PREDICT = ["predict", "--hw", "h100", "--method", "sparq", "--seq", "128k"]


def run_once(args: list[str], tree: str) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one cold `python -m kvsim ARGS` with ``tree`` first on the path."""
    env = dict(os.environ, PYTHONPATH=tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kvsim", *args], check=True, capture_output=True,
                         text=True, env=env, cwd=tree)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def measure(repeats: int, tree: str) -> dict:
    run_once(PLAN, tree), run_once(PREDICT, tree)  # warm-up pair: file caches, not counted
    plan_wall, plan_cpu, predict_wall, predict_cpu = [], [], [], []
    for _ in range(repeats):
        wall, cpu, stdout = run_once(PLAN, tree)
        plan_wall.append(wall), plan_cpu.append(cpu)
        wall, cpu, _ = run_once(PREDICT, tree)
        predict_wall.append(wall), predict_cpu.append(cpu)
    median = statistics.median
    return {"plan_wall_s": median(plan_wall), "predict_wall_s": median(predict_wall),
            "plan_cpu_s": median(plan_cpu), "predict_cpu_s": median(predict_cpu),
            "ratio_wall": median(a / b for a, b in zip(plan_wall, predict_wall)),
            "ratio_cpu": median(a / b for a, b in zip(plan_cpu, predict_cpu)),
            "options": _options(tree), "repeats": repeats}


def _options(tree: str) -> int:
    _, _, stdout = run_once(PLAN + ["--format", "json"], tree)
    return len(json.loads(stdout))


def _commit(tree: str) -> str:
    out = subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="append the result as a JSON line")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tree", default=ROOT, help="the kvsim checkout to time (default: this one)")
    parser.add_argument("--commit", help="the commit --tree holds (default: its git HEAD)")
    args = parser.parse_args()
    tree = os.path.abspath(args.tree)
    result = measure(args.repeats, tree)
    print(f"{'median of ' + str(args.repeats) + ' pairs':<28}{'wall':>9}{'cpu':>9}")
    print(f"{'kvsim plan (70B, 128k)':<28}{result['plan_wall_s']:>8.3f}s{result['plan_cpu_s']:>8.3f}s")
    print(f"{'kvsim predict (cold)':<28}{result['predict_wall_s']:>8.3f}s{result['predict_cpu_s']:>8.3f}s")
    print(f"{'plan / predict':<28}{result['ratio_wall']:>8.2f}x{result['ratio_cpu']:>8.2f}x   target <= 2x")
    if args.out:
        from kvsim.records import append_jsonl
        command = ["python", "benchmarks/bench_plan.py", "--repeats", str(args.repeats), "--out", args.out]
        if args.tree != ROOT:  # another checkout: named by its commit, not by where it lay
            command += ["--tree", f"<checkout of {args.commit or _commit(tree)}>"] + (["--commit", args.commit] if args.commit else [])
        append_jsonl(args.out, [dict(result, code_commit=args.commit or _commit(tree),
                                     plan_command="kvsim " + " ".join(PLAN),
                                     predict_command="kvsim " + " ".join(PREDICT),
                                     machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                                     load_1min=os.getloadavg()[0], python=platform.python_version(),
                                     numpy=np.__version__, date=datetime.date.today().isoformat(),
                                     command=" ".join(command))])


if __name__ == "__main__":
    main()
