"""Offloaded decode steps timed as users run them (CUDA-graph replay) and one call at a time
between device syncs, on a CUDA GPU (``--device cpu``: the same code paths, tiny sizes, for tests).

    python3 benchmarks/measure_offload_synced.py --out $OUT/h100-offload.jsonl \
        --synced-out $OUT/h100-offload-synced.jsonl \
        --methods dense,sparq,quest,alisa,tidaldecode --offload 0.25,0.5,0.9 --seqs 16384,65536

Each record is ``kvsim.runtime.measure.measure``'s: the step and attention-only latencies of a
captured step's replays where the offloaded step could be captured (``timer`` says so, or why
not: then the eager times), ``eager`` (CUDA events around each call), and ``synced``: every call
alone between device syncs (torch.cuda.synchronize(), host clock), so the side stream's copies
count in the call that issued them. ``--synced-out`` writes the same records with the synced
times as their latencies (``timer`` says so; kvsim predicts them on its eager engine).

TidalDecode on a cut model re-selects at the same relative depth (``cut_model_params``). A
configuration that raises (a CUDA error poisons the process) is written as a failed record and
the script exits with status 3, as after a record whose capture failed (``timer`` says why);
``--skip-done`` then resumes after it (with ``--no-graphs``: benchmarks/gpu_offload.sh's fallback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.runtime.sweep_process import cut_model_params  # noqa: E402
from kvsim.records import append_jsonl, read_jsonl  # noqa: E402


def synced_view(record: dict) -> dict:
    """The record with its synced times as its latencies (timed eagerly: kvsim's eager engine).
    Its L2 flush ran before a device sync, outside the timing, so it gave the call no head start
    (kvsim.eager_timing): ``l2_flush_bytes`` 0 here."""
    synced = record["synced"]
    out = {**record, "latency_s": synced["latency_s"], "contexts": synced["contexts"], "timer": synced["timer"],
           "attention": {**record["attention"], "latency_s": synced["attention_latency_s"]}, "l2_flush_bytes": 0,
           "eager": {**record["eager"], "latency_s": synced["latency_s"],
                     "attention_latency_s": synced["attention_latency_s"]}}
    out.pop("timed_contexts", None)
    out["tokens_per_s"] = record["batch"] / out["latency_s"]
    return out


def done_keys(path: str) -> set:
    """(method, seq, offload) of the records already in ``path``."""
    if not os.path.exists(path):
        return set()
    return {(r["method"], r["seq"], r["offload"]) for r in read_jsonl(path)}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--synced-out", help="also write the records with their synced times as latencies")
    parser.add_argument("--methods", default="dense,sparq,quest,alisa,tidaldecode")
    parser.add_argument("--offload", default="0.25,0.5,0.9")
    parser.add_argument("--seqs", default="16384,65536")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--no-graphs", action="store_true", help="eager and synced timings only")
    parser.add_argument("--skip-done", action="store_true", help="skip configurations already in --out")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no configuration after this")
    return parser.parse_args(argv)


def configs(args):
    for fraction in (float(f) for f in args.offload.split(",")):
        for seq in (int(s) for s in args.seqs.split(",")):
            for method in args.methods.split(","):
                yield method, seq, fraction


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    from kvsim.commands.measure import _driver, profile_for
    from kvsim.runtime.measure import measure
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("measure_offload_synced: no CUDA device; use --device cpu", file=sys.stderr)
        return 2
    hw, driver = (profile_for(torch.cuda.get_device_name()), _driver()) if cuda else (None, "unavailable")
    skip, start = done_keys(args.out) if args.skip_done else set(), time.time()
    for method, seq, fraction in configs(args):
        if (method, seq, fraction) in skip:
            continue
        if time.time() - start > args.budget_s:
            print("time budget reached; resume with --skip-done", flush=True)
            return 0
        config = dict(method=method, seq=seq, batch=args.batch, model=args.model, n_layers=args.layers,
                      params=cut_model_params(method, args.layers), offload=fraction)
        try:
            rec = measure(**config, steps=args.steps, warmup=args.warmup, hw=hw, device=args.device,
                          graphs=not args.no_graphs)
        except Exception as exc:  # a CUDA error poisons this process: record it, exit, resume
            append_jsonl(args.out, [{"source": "failed", **config, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}])
            print(f"failed: {method} F={fraction} S={seq}: {type(exc).__name__}", flush=True)
            return 3
        rec.update(command="python3 " + " ".join(sys.argv), driver=driver)
        append_jsonl(args.out, [rec])
        if args.synced_out and rec.get("synced"):
            append_jsonl(args.synced_out, [synced_view(rec)])
        if cuda:
            torch.cuda.empty_cache()
        synced = (rec.get("synced") or {}).get("latency_s", 0)
        print(f"{method:12s} F={fraction:<4} S={seq:6d}: step {rec.get('latency_s', 0) * 1e3:8.3f} ms, "
              f"synced {synced * 1e3:8.3f} ms  [{rec.get('timer', rec.get('error', ''))[:70]}]", flush=True)
        if "not capturable" in rec.get("timer", ""):  # a failed capture may leave state behind: go on afresh
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
