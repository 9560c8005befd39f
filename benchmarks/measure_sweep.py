"""Measure every method on the reference runtime over a grid (issue 5), on a CUDA GPU.

    python3 benchmarks/measure_sweep.py --out $OUT/h100-sweep.jsonl \
        --resume benchmarks/results/h100-sweep.jsonl --budget-s 500

Grid: methods x context {4k,16k,64k,128k} x batch {1,8,32} x models {llama-3.1-8b (GQA),
llama-2-7b (MHA)}, with the model cut to --layers layers (per-layer shapes stay real; kvsim
predicts the same cut model). Configurations whose predicted GPU memory exceeds 90% of the
device are skipped, as are ones already in --resume files. Each record is appended whole as it
completes, so a run stopped by --budget-s keeps what it measured; a later call resumes.
HBM bytes are counted separately (`kvsim measure` under ncu) for a subset: --ncu.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.commands.measure import profile_for  # noqa: E402
from kvsim.methods import METHODS  # noqa: E402
from kvsim.models import load_model  # noqa: E402
from kvsim.predict import predict  # noqa: E402
from kvsim.records import append_jsonl, read_jsonl  # noqa: E402


def grid(args):
    for model in args.models.split(","):
        for seq in map(int, args.seqs.split(",")):
            for batch in map(int, args.batches.split(",")):
                for method in (args.methods.split(",") if args.methods != "all" else list(METHODS)):
                    yield {"method": method, "seq": seq, "batch": batch, "model": model,
                           "params": cut_model_params(method, args.layers), "offload": args.offload}


def cut_model_params(method: str, layers: int) -> dict:
    """TidalDecode re-selects at layer 13 of 32; a model cut to fewer layers re-selects at the
    same relative depth (at least layer 3, after the selection layer 2)."""
    if method == "tidaldecode" and layers < 14:
        return {"reselect_layer": max(3, round(13 * layers / 32))}
    return {}


def fits(config, layers, hw, capacity_fraction=0.9) -> bool:
    model = load_model(config["model"]).model_copy(update={"n_layers": layers})
    pred = predict(hw, method=config["method"], seq=config["seq"], batch=config["batch"], model=model,
                   offload=config["offload"], **config["params"])
    return float(pred.memory_bytes) <= capacity_fraction * pred.gpu_capacity_bytes


def done_keys(paths) -> set:
    keys = set()
    for path in paths:
        if os.path.exists(path):
            for rec in read_jsonl(path):
                keys.add(json.dumps([rec["method"], rec["model"], rec["seq"], rec["batch"], rec.get("n_layers"),
                                     rec.get("offload") or 0.0]))
    return keys


def latency_sweep(args, hw) -> None:
    import torch
    from runtime.measure import measure

    from kvsim.commands.measure import _driver
    start, done, driver = time.time(), done_keys(args.resume + [args.out]), _driver()
    for config in grid(args):
        key = json.dumps([config["method"], config["model"], config["seq"], config["batch"], args.layers,
                          config["offload"]])
        if key in done or not fits(config, args.layers, hw):
            continue
        if time.time() - start > args.budget_s:
            print("time budget reached; resume later", flush=True)
            return
        try:
            record = measure(**config, n_layers=args.layers, steps=args.steps, warmup=args.warmup, hw=hw)
        except Exception as exc:  # a CUDA error poisons this process: record it, exit, resume
            append_jsonl(args.out, [{"source": "failed", **config, "n_layers": args.layers,
                                     "error": f"{type(exc).__name__}: {str(exc)[:300]}"}])
            print(f"failed: {config} {type(exc).__name__}", flush=True)
            sys.exit(3)
        record["command"] = "python3 " + " ".join(sys.argv)
        record["driver"] = driver
        append_jsonl(args.out, [record])
        torch.cuda.empty_cache()
        print(f"{config['model']:>14} {config['method']:>13} S={config['seq']:>6} B={config['batch']:>2} "
              f"step {record.get('latency_s', 0) * 1e3:8.3f} ms  attn {record.get('attention', {}).get('latency_s', 0) * 1e3:8.3f} ms",
              flush=True)


def ncu_subset(args, hw) -> None:
    """HBM bytes of one step under Nsight Compute, for KV several times the L2."""
    start = time.time()
    for config in grid(args):
        if time.time() - start > args.budget_s:
            return
        params = [part for k, v in config["params"].items() for part in ("--param", f"{k}={v}")]
        params += ["--offload", str(config["offload"])] if config["offload"] else []
        command = [sys.executable, "-m", "kvsim", "measure", *params, "--method", config["method"], "--seq",
                   str(config["seq"]), "--batch", str(config["batch"]), "--model", config["model"],
                   "--layers", str(args.layers), "--steps", "10", "--warmup", "3", "--out", args.out, "--hw", hw]
        done = subprocess.run(command, capture_output=True, text=True)
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
        rec = json.loads(line) if line.startswith("{") else {}
        print(config["method"], config["seq"], config["batch"], rec.get("hbm_bytes"), rec.get("hbm_bytes_how", line)[:120], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", nargs="*", default=[])
    parser.add_argument("--methods", default="all")
    parser.add_argument("--models", default="llama-3.1-8b,llama-2-7b")
    parser.add_argument("--seqs", default="4096,16384,65536,131072")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--offload", type=float, default=0.0,
                        help="oldest fraction of the KV cache in pinned host memory (PCIe validation)")
    parser.add_argument("--ncu", action="store_true", help="count HBM bytes under Nsight Compute instead")
    args = parser.parse_args()
    import torch
    hw = profile_for(torch.cuda.get_device_name())
    (ncu_subset if args.ncu else latency_sweep)(args, hw)


if __name__ == "__main__":
    main()
