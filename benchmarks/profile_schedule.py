"""Where an executed schedule's decode steps spend their time (issue 14): torch.profiler over
chosen steps of one generation, host calls and device kernels apart. On a CUDA GPU:

    python3 benchmarks/profile_schedule.py --hw h100 --gpu-mem 5.4GiB --steps 100,300,500 \
        --out $OUT/sched/h100-schedule-profile.json

Per profiled step: its CUDA-event latency, the host's CUDA API calls by name (count and host
time: launches, copies, synchronizations), the top host ops, and the device's kernels and copies
(count and time). A synchronizing call inside a step serializes the host's issue with the
device's work, which kvsim's eager engine assumes only where the method needs it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.commands.common import byte_size, positive_int, tokens  # noqa: E402

API_PREFIXES = ("cuda", "cu")  # CUDA runtime/driver calls in the CPU table


def table(prof, device: bool, top: int) -> list[dict]:
    key = "self_device_time_total" if device else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if ("CUDA" in str(e.device_type)) == device]
    rows = [{"name": e.key[:120], "calls": e.count, "us": getattr(e, key)} for e in events]
    rows = [r for r in rows if r["us"] > 0 and (device or not r["name"].startswith(API_PREFIXES))]
    return sorted(rows, key=lambda r: -r["us"])[:top]


def api_calls(prof) -> list[dict]:
    return sorted(({"name": e.key, "calls": e.count, "us": e.self_cpu_time_total}
                   for e in prof.key_averages() if e.key.startswith(API_PREFIXES)
                   and "CUDA" not in str(e.device_type)), key=lambda r: -r["us"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hw", required=True)
    ap.add_argument("--model", default="opt-6.7b")
    ap.add_argument("--layers", type=positive_int, default=4)
    ap.add_argument("--batch", type=positive_int, default=32)
    ap.add_argument("--prompt", type=tokens, default=128)
    ap.add_argument("--gen", type=tokens, default=512)
    ap.add_argument("--gpu-mem", type=byte_size, required=True)
    ap.add_argument("--policy", default="alisa")
    ap.add_argument("--steps", default="100,300,500", help="decode steps to profile")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from kvsim.runtime.model import Decoder
    from kvsim.runtime.schedule_exec import generate
    from kvsim.schedule.executed import prediction
    pred = prediction(args.hw, args.model, args.layers, args.batch, args.prompt, args.gen, args.gpu_mem)
    device = torch.device("cuda")
    decoder = Decoder(args.model, pred["n_layers"], device, torch.bfloat16, 0, max_positions=args.prompt + args.gen)
    generate(args.policy, pred, device, torch.bfloat16, decoder=decoder)  # compile every shape first
    wanted, live, out = {int(s) for s in args.steps.split(",")}, {}, {}

    def hook(j: int) -> None:  # after step j: close its profile, open the next wanted one
        if "prof" in live:
            prof = live.pop("prof")
            prof.stop()
            out[str(j)] = {"host_api": api_calls(prof), "host_ops": table(prof, False, args.top),
                           "device": table(prof, True, args.top)}
        if j + 1 in wanted:
            live["prof"] = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            live["prof"].start()

    run = generate(args.policy, pred, device, torch.bfloat16, decoder=decoder, step_hook=hook)
    for j, step in out.items():
        s = run["steps"][int(j)]
        step.update(latency_s=s["latency_s"], phase=s["phase"], h2d=s["h2d"], host_rows=s.get("host_rows"))
    with open(args.out, "w") as f:
        json.dump({"config": vars(args), "plan": {k: pred["alisa"][k] for k in ("p1", "p2", "alpha", "beta")},
                   "steps": out}, f, indent=1)
    for j, step in sorted(out.items(), key=lambda kv: int(kv[0])):
        syncs = {r["name"]: r["calls"] for r in step["host_api"] if "ynchron" in r["name"] or "Memcpy" in r["name"]}
        busy = sum(r["us"] for r in step["device"])
        print(f"step {j} ({step['phase']}): {step['latency_s'] * 1e3:.2f} ms, device busy {busy / 1e3:.2f} ms, "
              f"h2d {step['h2d'] / 1e6:.1f} MB; syncs/copies {syncs}")
        for r in step["device"][:6]:
            print(f"    {r['us']:9.1f} us x{r['calls']:<4d} {r['name'][:90]}")


if __name__ == "__main__":
    main()
