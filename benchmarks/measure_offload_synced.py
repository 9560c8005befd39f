"""Offloaded decode steps timed one call at a time, between device syncs, on a CUDA GPU.

    python3 benchmarks/measure_offload_synced.py --out $OUT/h100-offload-synced.jsonl \
        --methods dense,sparq,quest,alisa,tidaldecode --offload 0.25,0.5,0.9 --seqs 16384,65536

Why: offloaded steps run block copies on a side stream (runtime/offload.py). The CUDA events of
runtime/measure.py sit on the compute stream, and the host issues calls ahead of the device, so a
call's side-stream copies can run inside the previous timed call's window or between timed
calls (the dense records of h100-offload.jsonl at F = 0.9, 64k: a step of 18 ms that moves 3.9 GB
over a 64 GB/s link). Here every call starts on an idle device and ends when every stream is
done (torch.cuda.synchronize() before and after, timed by the host clock): the time from the
first launch to the last op's end, which kvsim's eager engine predicts. A dense step then
includes the prefetch of the next call's first layer and not its own (in steady state: one
layer's block either way).

Each record is ``kvsim.runtime.measure.measure``'s (bytes, memory, launch counts, backends) with
its step and attention-only latencies replaced by the synced ones (``timer`` says so;
``contexts``: the synced steps' first and last).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.records import append_jsonl  # noqa: E402

TIMER = "perf_counter between device syncs (every stream), eager (offloaded steps copy on a side stream)"


def synced_times(engine, steps: int, warmup: int) -> tuple[list, list, int]:
    """(attention-only times, step times, context of the first timed step)."""
    import torch
    from kvsim.runtime.measure import l2_flush_bytes
    flush = torch.empty(l2_flush_bytes(engine.device) // 4, dtype=torch.int32, device=engine.device)

    def timed(fn) -> float:
        flush.zero_()
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        engine.attention_only_step()
        engine.step()
    first = engine.length + 1  # the first timed step attends length + 1 rows
    attention, step = [], []
    for _ in range(steps):
        attention.append(timed(engine.attention_only_step))
        step.append(timed(engine.step))
    return attention, step, first


def measure_synced(method: str, seq: int, batch: int, model: str, layers: int, fraction: float,
                   steps: int, warmup: int, hw: str | None) -> dict:
    import torch
    from kvsim.runtime.measure import _engine, measure
    record = measure(method, seq=seq, batch=batch, model=model, n_layers=layers, steps=steps,
                     warmup=warmup, offload=fraction, graphs=False, hw=hw)
    torch.cuda.empty_cache()
    if not record.get("fits"):
        return record
    engine, _ = _engine(method, seq, batch, model, layers, None, warmup + steps // 2, device=None,
                        dtype=None, kv_dtype=None, offload=fraction, seed=0)
    attention, step, first = synced_times(engine, steps, warmup)
    record.update(latency_s=statistics.median(step), contexts=[first, first + steps - 1], timer=TIMER)
    record["attention"]["latency_s"] = statistics.median(attention)
    record["eager"] = {"latency_s": record["latency_s"], "attention_latency_s": record["attention"]["latency_s"]}
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", default="dense,sparq,quest,alisa,tidaldecode")
    parser.add_argument("--offload", default="0.25,0.5,0.9")
    parser.add_argument("--seqs", default="16384,65536")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    import torch
    from kvsim.commands.measure import _driver, profile_for
    hw, driver = profile_for(torch.cuda.get_device_name()), _driver()
    for fraction in (float(f) for f in args.offload.split(",")):
        for seq in (int(s) for s in args.seqs.split(",")):
            for method in args.methods.split(","):
                rec = measure_synced(method, seq, args.batch, args.model, args.layers, fraction,
                                     args.steps, args.warmup, hw)
                rec.update(command="python3 " + " ".join(sys.argv), driver=driver)
                append_jsonl(args.out, [rec])
                torch.cuda.empty_cache()
                print(f"{method:12s} F={fraction} S={seq}: step {rec.get('latency_s', 0) * 1e3:8.3f} ms", flush=True)


if __name__ == "__main__":
    main()
