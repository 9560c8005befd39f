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

from .. import outfile
from ..errors import KvsimError
from ..methods import names_with
from ..records import append_jsonl
from ..units import format_bytes
from .common import ANSWER, NO_FIT, add_model_args, fraction, parse_params, positive_int, tokens

NCU_METRICS = "dram__bytes_read.sum,dram__bytes_write.sum"
# predicted memory above this multiple of the device's is not run (a configuration near the limit
# is, and the runtime records whether it fits); kvsim's memory is within a few % of the runtime's
CLEARLY_TOO_BIG = 1.25
CPU_SHARE = 0.8  # on the CPU a run past its RAM is killed, not refused: keep a fifth for the system


def register(sub) -> None:
    parser = sub.add_parser("measure", help="measure one configuration on the reference runtime (GPU)")
    parser.add_argument("--method", default="dense")
    parser.add_argument("--seq", type=tokens, required=True)
    parser.add_argument("--batch", type=positive_int, default=1, help="sequences decoded together: 8, 1k")
    parser.add_argument("--layers", type=positive_int, help="cut the model to N layers (shapes stay real)")
    parser.add_argument("--steps", type=positive_int, default=30, help="timed decode steps (median)")
    parser.add_argument("--warmup", type=positive_int, default=5)
    parser.add_argument("--hw", help="profile to record (default: matched from the device name)")
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        help="cuda (the default; required unless --device cpu) or cpu (a small smoke test)")
    parser.add_argument("--offload", type=fraction, default=0.0,
                        help="oldest fraction of the KV cache in pinned host memory "
                             f"({', '.join(names_with('offload'))})")
    parser.add_argument("--no-ncu", action="store_true", help="skip the Nsight Compute byte count")
    parser.add_argument("--out", help="append the record to this JSONL file")
    parser.add_argument("--ncu-child", action="store_true", help=argparse.SUPPRESS)
    add_model_args(parser)
    parser.set_defaults(run=run)


def profile_for(device_name: str) -> str | None:
    """The profile whose ``device_names`` match the name the GPU reports (kvsim.hardware)."""
    from ..profiles import profile_for_device
    return profile_for_device(device_name)


def _runtime():
    try:
        from kvsim.runtime import measure as harness
    except ImportError as exc:
        raise KvsimError(f"kvsim measure needs the runtime extra (pip install '.[runtime]'): {exc}") from None
    return harness


def _config(args) -> dict:
    return dict(method=args.method, seq=args.seq, batch=args.batch, model=args.model,
                n_layers=args.layers, params=parse_params(args.param), offload=args.offload)


def _device(args) -> str:
    """cuda unless --device cpu: the 8B model on the CPU is never a silent fallback."""
    import torch

    if args.device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise KvsimError("kvsim measure needs a CUDA GPU and torch finds none; "
                         "--device cpu runs a small configuration on the CPU instead")
    return "cuda"


def _preflight(args, device: str):
    """The configuration predicted first, so whatever kvsim predict refuses (an unknown method, a
    parameter, --offload for a method without it, --layers beyond the model) is refused before the
    runtime starts, and what clearly does not fit the device's memory is not run.
    -> (the profile or None, "" or why it does not fit)."""
    from ..profiles import load_profile
    from ..models import load_model
    from ..predict import predict

    model = load_model(args.model)
    if args.layers and args.layers > model.n_layers:
        raise KvsimError(f"--layers {args.layers}: {model.name} has {model.n_layers} layers")
    if args.layers:
        model = model.model_copy(update={"n_layers": args.layers})
    profile = load_profile(args.hw) if args.hw else None
    pred = predict(profile or ("cpu" if device == "cpu" else "h100"), args.method, seq=args.seq,
                   batch=args.batch, model=model, kv_dtype=args.kv_dtype, offload=args.offload,
                   dtype=args.dtype, **parse_params(args.param))
    have, need = _device_memory(device), float(pred.memory_bytes) * (2 if device == "cpu" else 1)
    if need > (CPU_SHARE if device == "cpu" else CLEARLY_TOO_BIG) * have:  # fp32 on the CPU: twice the 16-bit bytes
        return None, f"does not fit: needs about {format_bytes(need)} on the {device}, it has {format_bytes(have)}"
    return profile, ""


def _device_memory(device: str) -> float:
    if device == "cpu":
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    import torch
    return float(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


def run(args) -> int:
    if args.out:
        outfile.check(args.out, "--out")
    device = _device(args)
    profile, no_fit = _preflight(args, device)
    if no_fit:
        print(no_fit, file=sys.stderr)
        return NO_FIT
    harness = _runtime()
    kw = dict(device=device, kv_dtype=args.kv_dtype, dtype=args.dtype)
    try:
        if args.ncu_child:  # inside ncu: one warm step between profiler start/stop
            harness.run_steps_for_profiling(**_config(args), **kw)
            return ANSWER
        record = harness.measure(**_config(args), steps=args.steps, warmup=args.warmup, **kw)
    except (ValueError, KeyError) as exc:
        raise KvsimError(f"the runtime refused the configuration: {exc}") from None
    record["hw"] = profile.name if profile else (profile_for(record["device"]) or record["device"])
    record["command"] = "kvsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record["driver"] = _driver()
    if record.get("fits", True):
        record.update(_hbm_bytes(args))
    if args.out:
        append_jsonl(args.out, [record])
    print(json.dumps(record, sort_keys=True, default=str))
    return ANSWER if record.get("fits", True) else NO_FIT


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
    child += ["--dtype", args.dtype] if args.dtype else []
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
