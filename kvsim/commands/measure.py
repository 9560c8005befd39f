"""kvsim measure: run one configuration on the reference runtime (a CUDA GPU, or the CPU for a
smoke test) and append its record; HBM bytes come from Nsight Compute when ``ncu`` is on PATH.

The record uses the prediction's schema (kvsim/records.py) plus the device name, driver, torch
and triton versions, date and the exact command, and ``hw``: the profile matching the device,
so ``kvsim validate`` can predict the same configuration. Needs the ``runtime`` extra.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from ..errors import KvsimError
from ..records import append_jsonl
from .common import add_model_args, fraction, parse_params, positive_int, tokens

NCU_METRICS = "dram__bytes_read.sum,dram__bytes_write.sum"


def register(sub) -> None:
    parser = sub.add_parser("measure", help="measure one configuration on the reference runtime (GPU)")
    parser.add_argument("--method", default="dense")
    parser.add_argument("--seq", type=tokens, required=True)
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--layers", type=positive_int, help="cut the model to N layers (shapes stay real)")
    parser.add_argument("--steps", type=positive_int, default=30, help="timed decode steps (median)")
    parser.add_argument("--warmup", type=positive_int, default=5)
    parser.add_argument("--hw", help="profile to record (default: matched from the device name)")
    parser.add_argument("--device", help="cuda (default when present) or cpu")
    parser.add_argument("--offload", type=fraction, default=0.0,
                        help="oldest fraction of the KV cache in pinned host memory (dense, sparq, quest, alisa)")
    parser.add_argument("--no-ncu", action="store_true", help="skip the Nsight Compute byte count")
    parser.add_argument("--out", help="append the record to this JSONL file")
    parser.add_argument("--ncu-child", action="store_true", help=argparse.SUPPRESS)
    add_model_args(parser)
    parser.set_defaults(run=run)


def profile_for(device_name: str) -> str | None:
    """The profile whose ``device_names`` match the name the GPU reports (kvsim.hardware)."""
    from ..hardware import profile_for_device
    return profile_for_device(device_name)


def _runtime():
    try:
        from runtime import measure as harness
    except ImportError as exc:
        raise KvsimError(f"kvsim measure needs the runtime extra (pip install '.[runtime]'): {exc}") from None
    return harness


def _config(args) -> dict:
    return dict(method=args.method, seq=args.seq, batch=args.batch, model=args.model,
                n_layers=args.layers, params=parse_params(args.param), offload=args.offload)


def run(args) -> int:
    harness = _runtime()
    if args.ncu_child:  # inside ncu: one warm step between profiler start/stop
        harness.run_steps_for_profiling(**_config(args), device=args.device, kv_dtype=args.kv_dtype)
        return 0
    record = harness.measure(**_config(args), steps=args.steps, warmup=args.warmup,
                             device=args.device, kv_dtype=args.kv_dtype)
    record["hw"] = args.hw or profile_for(record["device"]) or record["device"]
    record["command"] = "kvsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record["driver"] = _driver()
    if record.get("fits", True):
        record.update(_hbm_bytes(args))
    if args.out:
        append_jsonl(args.out, [record])
    print(json.dumps(record, sort_keys=True, default=str))
    return 0


def _driver() -> str:
    if not shutil.which("nvidia-smi"):
        return "unavailable"
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unavailable"


def _hbm_bytes(args) -> dict:
    """Sum of dram__bytes_read/write over every kernel of one decode step, or why not."""
    ncu = shutil.which("ncu")
    if args.no_ncu or ncu is None or (args.device or "cuda") == "cpu":
        return {"hbm_bytes": None, "hbm_bytes_how": "unavailable: ncu not run" if ncu else "unavailable: ncu not on PATH"}
    child = ["measure", "--method", args.method, "--seq", str(args.seq), "--batch", str(args.batch),
             "--model", args.model, "--warmup", str(args.warmup)]
    child += ["--layers", str(args.layers)] if args.layers else []
    child += ["--kv-dtype", args.kv_dtype] if args.kv_dtype else []
    child += ["--offload", str(args.offload)] if args.offload else []
    child += [part for pair in (args.param or []) for part in ("--param", pair)]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "ncu.csv")
        command = [ncu, "--clock-control", "none", "--profile-from-start", "off", "--metrics", NCU_METRICS,
                   "--csv", "--print-units", "base", "--log-file", log,
                   sys.executable, "-m", "kvsim", *child, "--ncu-child"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not os.path.exists(log):
            return {"hbm_bytes": None, "hbm_bytes_how": f"unavailable: ncu failed ({done.stderr.strip()[-200:]})"}
        read, write, kernels = parse_ncu_csv(open(log).read())
    return {"hbm_bytes": read + write, "hbm": {"read": read, "write": write, "kernels": kernels},
            "hbm_bytes_how": f"ncu --clock-control none --metrics {NCU_METRICS}, one decode step"}


def parse_ncu_csv(text: str) -> tuple[float, float, int]:
    """(bytes read, bytes written, kernels) from ncu --csv --print-units base output."""
    start = text.find('"ID"')
    if start < 0:
        raise KvsimError("ncu wrote no metric table")
    read = write = 0.0
    kernels = set()
    for row in csv.DictReader(io.StringIO(text[start:])):
        value = float(str(row.get("Metric Value", "0")).replace(",", "") or 0)
        if row.get("Metric Name") == "dram__bytes_read.sum":
            read += value
            kernels.add(row.get("ID"))
        elif row.get("Metric Name") == "dram__bytes_write.sum":
            write += value
    return read, write, len(kernels)
