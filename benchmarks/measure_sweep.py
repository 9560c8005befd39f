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
from kvsim.errors import KvsimError  # noqa: E402
from kvsim.methods import METHODS  # noqa: E402
from kvsim.models import load_model  # noqa: E402
from kvsim.predict import predict  # noqa: E402
from kvsim.records import append_jsonl, read_jsonl  # noqa: E402
from kvsim.runtime.sweep_process import (  # noqa: E402
    cut_model_params, fresh_record, memory_grid, remeasured, slow_replay)


EXTENDED_PAIRS = [(8192, 16), (49152, 4), (98304, 2)]  # contexts off the power-of-two grid
EXTENDED_MODELS = {"llama-2-13b": 8, "llama-3.1-70b": 4, "opt-6.7b": 8}  # model: layers kept
VARIANTS = [  # each method's main parameters at two non-default values (issue 12)
    ("sparq", {"r": 16, "k": 1024}), ("sparq", {"r": 64, "k": 4096}),
    ("quest", {"page_size": 32, "budget": 2048}), ("quest", {"page_size": 8, "budget": 8192}),
    ("duoattention", {"retrieval_ratio": 0.25}), ("duoattention", {"retrieval_ratio": 0.75}),
    ("tidaldecode", {"k": 128}), ("tidaldecode", {"k": 1024}),
    ("h2o", {"heavy": 1024, "recent": 1024}), ("h2o", {"heavy": 4096, "recent": 512}),
    ("streamingllm", {"recent": 512}), ("streamingllm", {"recent": 8192}),
    ("alisa", {"sparsity": 0.5}), ("alisa", {"sparsity": 0.9}),
    ("adore", {"m": 1024, "R": 4}), ("adore", {"m": 4096, "R": 16}),
]


def extended_grid(methods):
    """Models beyond the two of the main grid (MHA 40 heads, 70B's 8:1 GQA, OPT) at every method's
    defaults, then each method's parameters at two other values on llama-3.1-8b (8 layers), all at
    the off-grid (context, batch) pairs, plus batch 64 at 4k."""
    for model, layers in EXTENDED_MODELS.items():
        for seq, batch in EXTENDED_PAIRS:
            for method in methods:
                yield {"method": method, "seq": seq, "batch": batch, "model": model, "layers": layers,
                       "params": cut_model_params(method, layers)}
    for method, params in VARIANTS:
        for seq, batch in EXTENDED_PAIRS[:2] + [(4096, 64)]:
            if method in methods:
                yield {"method": method, "seq": seq, "batch": batch, "model": "llama-3.1-8b", "layers": 8,
                       "params": {**cut_model_params(method, 8), **params}}


def grid(args):
    if args.grid in ("extended", "memory"):
        methods = args.methods.split(",") if args.methods != "all" else list(METHODS)
        configs = extended_grid(methods) if args.grid == "extended" else memory_grid(methods)
        for config in configs:
            yield {**config, "offload": args.offload}
        return
    for model in args.models.split(","):
        for seq in map(int, args.seqs.split(",")):
            for batch in map(int, args.batches.split(",")):
                for method in (args.methods.split(",") if args.methods != "all" else list(METHODS)):
                    yield {"method": method, "seq": seq, "batch": batch, "model": model, "layers": args.layers,
                           "params": {**cut_model_params(method, args.layers), **extra_params(args.param)},
                           "offload": args.offload}


def extra_params(pairs) -> dict:
    """--param NAME=VALUE (numbers as numbers), given to every method of the main grid."""
    params = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            params[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            params[name] = value
    return params


def fits(config, layers, hw, capacity_fraction=0.9) -> bool:
    model = load_model(config["model"]).model_copy(update={"n_layers": layers})
    try:
        pred = predict(hw, method=config["method"], seq=config["seq"], batch=config["batch"], model=model,
                       offload=config["offload"], **config["params"])
    except KvsimError as exc:  # parameters this context or model cannot take: nothing to measure
        print(f"skipped {config['method']} {config['model']} S={config['seq']}: {exc}", flush=True)
        return False
    return float(pred.memory_bytes) <= capacity_fraction * pred.gpu_capacity_bytes


def config_key(method, model, seq, batch, layers, offload) -> str:
    return json.dumps([method, model, seq, batch, layers, offload or 0.0])


def done_params(paths) -> dict:
    """{configuration key: [params of each record measured]} over the files given."""
    done = {}
    for path in paths:
        if os.path.exists(path):
            for rec in read_jsonl(path):
                key = config_key(rec["method"], rec["model"], rec["seq"], rec["batch"], rec.get("n_layers"),
                                 rec.get("offload"))
                done.setdefault(key, []).append(rec.get("params") or {})
    return done


def measured(done: dict, key: str, params: dict) -> bool:
    """Records carry every parameter with its default filled in: one matches when it agrees
    with each parameter the configuration names."""
    return any(all(rec.get(k) == v for k, v in params.items()) for rec in done.get(key, []))


def destination(args, index: int) -> str:
    """Every ``--vault-every``-th configuration of the grid (from the last) goes to the vault
    file, which nobody opens while the model is being changed: the final held-out test."""
    if args.vault and args.vault_every and index % args.vault_every == args.vault_every - 1:
        return args.vault
    return args.out


def latency_sweep(args, hw) -> None:
    import torch

    from kvsim.commands.measure import _driver
    start, driver, position = time.time(), _driver(), 0
    done = done_params(args.resume + [args.out] + ([args.vault] if args.vault else []))
    for index, config in enumerate(grid(args)):
        layers = config.pop("layers")
        key = config_key(config["method"], config["model"], config["seq"], config["batch"], layers,
                         config["offload"])
        if measured(done, key, config["params"]) or not fits(config, layers, hw):
            continue
        if time.time() - start > args.budget_s:
            print("time budget reached; resume later", flush=True)
            return
        out = destination(args, index)
        record = (fresh_record if args.fresh else sweep_record)(args, config, layers, hw, out)
        if not args.fresh and slow_replay(record):
            record = remeasured(args, config, layers, hw, out, record)
        record.setdefault("process", f"sweep, after {position} configurations")
        record["driver"] = record.get("driver") or driver
        record |= {"note": args.note} if args.note else {}
        append_jsonl(out, [record])
        torch.cuda.empty_cache()
        position += 1
        if out == args.vault:
            print(f"config {index}: measured into the vault", flush=True)
            continue
        print(f"{config['model']:>14} {config['method']:>13} S={config['seq']:>6} B={config['batch']:>2} "
              f"step {record.get('latency_s', 0) * 1e3:8.3f} ms  attn {record.get('attention', {}).get('latency_s', 0) * 1e3:8.3f} ms"
              f"  peak {record.get('memory_bytes', 0) / 2**30:6.2f} GiB", flush=True)


def sweep_record(args, config, layers, hw, out) -> dict:
    """One configuration measured in this process (--memory: one warm step, the peak step, two
    eager timed steps, no graphs: what the peak allocation needs)."""
    from kvsim.runtime.measure import measure
    steps, warmup = (2, 1) if args.memory else (args.steps, args.warmup)
    try:
        record = measure(**config, n_layers=layers, steps=steps, warmup=warmup, hw=hw, graphs=not args.memory)
    except Exception as exc:  # a CUDA error poisons this process: record it, exit, resume
        append_jsonl(out, [{"source": "failed", **config, "n_layers": layers,
                            "error": f"{type(exc).__name__}: {str(exc)[:300]}"}])
        print(f"failed: {config} {type(exc).__name__}", flush=True)
        sys.exit(3)
    record["command"] = "python3 " + " ".join(sys.argv)
    return record


def ncu_subset(args, hw) -> None:
    """HBM bytes of one step under Nsight Compute, for KV several times the L2."""
    start = time.time()
    for config in grid(args):
        if time.time() - start > args.budget_s:
            return
        layers = config.pop("layers")
        params = [part for k, v in config["params"].items() for part in ("--param", f"{k}={v}")]
        params += ["--offload", str(config["offload"])] if config["offload"] else []
        command = [sys.executable, "-m", "kvsim", "measure", *params, "--method", config["method"], "--seq",
                   str(config["seq"]), "--batch", str(config["batch"]), "--model", config["model"],
                   "--layers", str(layers), "--steps", "10", "--warmup", "3", "--out", args.out, "--hw", hw]
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
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a method parameter for every configuration of the main grid (e.g. kv_bits=8)")
    parser.add_argument("--grid", choices=["main", "extended", "memory"], default="main",
                        help="main: --models x --seqs x --batches; extended: other models, contexts, batches, "
                             "params; memory: every method at one configuration per model (MEMORY_CASES)")
    parser.add_argument("--vault", help="file for every --vault-every-th configuration (the untouched held-out part)")
    parser.add_argument("--vault-every", type=int, default=4)
    parser.add_argument("--ncu", action="store_true", help="count HBM bytes under Nsight Compute instead")
    parser.add_argument("--memory", action="store_true",
                        help="peak allocation only: one warm step, the peak step, two eager timed steps, no graphs")
    parser.add_argument("--fresh", action="store_true", help="each configuration in a process of its own (kvsim measure)")
    parser.add_argument("--note", help="a note stored in every record (why it was measured)")
    args = parser.parse_args()
    import torch
    hw = profile_for(torch.cuda.get_device_name())
    (ncu_subset if args.ncu else latency_sweep)(args, hw)


if __name__ == "__main__":
    main()
