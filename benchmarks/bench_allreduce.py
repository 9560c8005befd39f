"""All-reduce time by message size on N GPUs of one host (NCCL, sum, bf16; gloo fp32 on the CPU):
what kvsim's interconnect fields (``interconnect.latency_s``, ``bandwidth_Bps`` x ``efficiency``)
predict for the TP collectives (kvsim.decoder.allreduce: 2(N-1)/N of the message sent per GPU).

    python3 benchmarks/bench_allreduce.py --gpus 2 --out $OUT/h200-allreduce.jsonl

Per size: ``eager_s``, the median over --iters calls of one all-reduce between CUDA events; and
``graph_s``, one replay of a CUDA graph of --inner all-reduces divided by --inner (the form the
TP step graphs run them in), median over --iters replays. A call's time is the slowest rank's.
One record per size, then one ``allreduce_fit`` record: least squares of graph_s (eager_s
without CUDA) = latency_s + sent_bytes / effective_Bps over the sizes, the profile fields it
gives (efficiency = effective_Bps / the profile's bandwidth_Bps) and each size's error against
the fit and against the shipped profile. Multicast (NVLS) is off (runtime/tp_env.py).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.runtime.tp_env import disable_multicast  # noqa: E402  (no torch import)

disable_multicast()  # before any process group starts; spawned children inherit it

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from kvsim.commands.measure import _driver, profile_for  # noqa: E402
from kvsim.fits import allreduce_fit as fit, allreduce_profile_time as profile_time  # noqa: E402
from kvsim.profiles import load_profile
from kvsim.records import append_jsonl  # noqa: E402

DEFAULT_SIZES = [2**p for p in range(10, 29, 2)]  # 1 KiB .. 256 MiB: a decode step's 8 KB to bulk


def timed_calls(fn, iters: int, cuda: bool) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn``."""
    if not cuda:
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in events]


def graph_call(x: torch.Tensor, inner: int):
    """A replay of a captured graph of ``inner`` all-reduces of ``x`` (None where not capturable)."""
    from benchmarks.measure_tp import capture
    try:
        return capture(lambda: [dist.all_reduce(x) for _ in range(inner)])
    except Exception as exc:  # noqa: BLE001 - reported, eager times stay
        print(f"graph capture failed: {type(exc).__name__}: {str(exc)[:160]}", flush=True)
        torch.cuda.synchronize()
        return None


def measure_size(nbytes: int, args, device: str) -> dict:
    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    x = torch.ones(max(1, nbytes // torch.tensor([], dtype=dtype).element_size()), dtype=dtype, device=device)
    for _ in range(5):
        dist.all_reduce(x)
    eager = statistics.median(timed_calls(lambda: dist.all_reduce(x), args.iters, cuda))
    replay = graph_call(x, args.inner) if cuda else None
    ok = torch.tensor([1 if replay is not None else 0], device=device)
    dist.all_reduce(ok)  # replay only where every rank captured
    graph = None
    if int(ok) == dist.get_world_size():
        replay()
        graph = statistics.median(timed_calls(replay, args.iters, cuda)) / args.inner
    return {"bytes": x.numel() * x.element_size(), "dtype": str(dtype).replace("torch.", ""),
            "eager_s": eager, "graph_s": graph}


def summarize(rows: list[dict], gpus: int, hw_name: str | None, base: dict) -> list[dict]:
    """Per-size records with kvsim's prediction, then the fit record."""
    hw = load_profile(hw_name) if hw_name else None
    how = "graph_s" if all(r["graph_s"] for r in rows) else "eager_s"
    sent = np.array([2.0 * (gpus - 1) / gpus * r["bytes"] for r in rows])
    seconds = np.array([r[how] for r in rows])
    latency, effective = fit(sent, seconds)
    records = []
    for row, s, t in zip(rows, sent, seconds):
        predicted = profile_time(hw, row["bytes"], gpus) if hw else None
        records.append({**base, "kind": "allreduce", **row, "sent_bytes": s, "busbw_Bps": s / t,
                        "fit_error": (latency + s / effective - t) / t,
                        "predicted_s": predicted, "error": (predicted - t) / t if hw else None})
    fields = {"interconnect.latency_s": latency}
    if hw is not None and hw.interconnect is not None:
        fields["interconnect.efficiency"] = effective / hw.interconnect.bandwidth_Bps.value
    records.append({**base, "source": "fit", "kind": "allreduce_fit", "timed": how, "latency_s": latency,
                    "effective_Bps": effective, "profile_fields": fields,
                    "max_abs_fit_error": float(max(abs(r["fit_error"]) for r in records)),
                    "max_abs_profile_error": float(max(abs(r["error"]) for r in records)) if hw else None})
    return records


def work(rank, world, device, args):
    from kvsim.runtime.tp_launch import environment, topology
    rows = []
    for nbytes in args.sizes:
        mine = measure_size(nbytes, args, device)
        every = [None] * world
        dist.all_gather_object(every, mine)
        slowest = {**mine, **{k: max(r[k] for r in every) for k in ("eager_s", "graph_s") if mine[k] is not None}}
        rows.append(slowest)
        if rank == 0:
            graph = f"{slowest['graph_s'] * 1e6:9.2f} us" if slowest["graph_s"] else "      -"
            print(f"x{world} {slowest['bytes']:>10} B  eager {slowest['eager_s'] * 1e6:9.2f} us  graph {graph}", flush=True)
    if rank != 0:
        return
    hw = args.hw or (profile_for(torch.cuda.get_device_name()) if device == "cuda" else None)
    base = {"source": "measured", "gpus": world, "hw": hw, "device": torch.cuda.get_device_name() if device == "cuda"
            else "cpu", "backend": dist.get_backend(), "torch": torch.__version__, **environment(),
            "topology": topology(), "driver": _driver(), "iters": args.iters, "inner": args.inner,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 " + " ".join(sys.argv)}
    records = summarize(rows, world, hw, base)
    append_jsonl(args.out, records)
    last = records[-1]
    print(f"fit x{world}: latency {last['latency_s'] * 1e6:.2f} us, {last['effective_Bps'] / 1e9:.1f} GB/s sent per GPU "
          f"({last['timed']}), worst fit error {last['max_abs_fit_error']:.1%}, profile fields {last['profile_fields']}, "
          f"worst error of the shipped profile {last['max_abs_profile_error']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=DEFAULT_SIZES,
                        help="message bytes, comma-separated (default 1 KiB .. 256 MiB, x4)")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--inner", type=int, default=10, help="all-reduces per captured graph")
    parser.add_argument("--hw", help="profile to compare with (default: matched from the device name)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.gpus < 2 or args.iters < 1 or args.inner < 1 or min(args.sizes) < 1 or len(set(args.sizes)) < 2:
        print("bench_allreduce: need --gpus >= 2, --iters and --inner >= 1, and 2 or more distinct sizes >= 1 "
              "(the fit has two unknowns)", file=sys.stderr)
        sys.exit(2)
    from kvsim.runtime.tp_launch import run_ranks
    run_ranks(work, args.gpus, args.device, args=(args,), timeout_s=120)


if __name__ == "__main__":
    main()
