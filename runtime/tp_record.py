"""A tensor-parallel measurement record (runtime/measure.py's fields, ``gpus`` > 1) from every
rank's timings: per call the slowest rank, the median over calls."""
from __future__ import annotations

import statistics

import torch


def slowest(per_rank: list[list[float]]) -> list[float]:
    """Per call, the slowest rank's time."""
    return [max(times) for times in zip(*per_rank)]


def record_of(config, args, ranks: list[dict], device: str, hw, extras: dict) -> dict:
    """A kvsim record (runtime/measure.py's fields, ``gpus`` > 1) from every rank's results."""
    from kvsim.runtime.measure import _record_base, l2_flush_bytes
    from kvsim.runtime.model import DTYPE_NAMES
    first = ranks[0]
    record = _record_base(config["method"], config["seq"], config["batch"], args.model,
                          args.layers, first["params_record"], {"device": device, "offload": False}, hw)
    eager = slowest([r["eager"] for r in ranks])
    record.update(
        gpus=args.gpus, dtype=DTYPE_NAMES[first["dtype"]], kv_dtype=first["kv_dtype"], resolved_params=first["params"],
        fits=True, latency_s=statistics.median(eager[1::2]), attention={"latency_s": statistics.median(eager[0::2])},
        pcie_bytes=0.0, hbm_bytes=None, hbm_bytes_how="unavailable: Nsight Compute not run on several GPUs",
        memory_bytes=max(r["memory"] for r in ranks),
        memory_how=first["memory_how"] + " per GPU, the largest" + (" (NCCL's own buffers not included)" if device == "cuda" else ""),
        memory_bytes_per_gpu=[r["memory"] for r in ranks], kv_bytes_per_gpu=[r["kv_bytes"] for r in ranks],
        weight_bytes_per_gpu=[r["weight_bytes"] for r in ranks], kv_bytes=max(r["kv_bytes"] for r in ranks),
        weight_bytes=max(r["weight_bytes"] for r in ranks), contexts=first["contexts"], prefill=first["prefill"],
        steps=args.steps, warmup=args.warmup, l2_flush_bytes=l2_flush_bytes(torch.device(device)) if device == "cuda" else 0,
        rank_latency_s=[statistics.median(r["eager"][1::2]) for r in ranks], **extras)
    record["eager"] = {"latency_s": record["latency_s"], "attention_latency_s": record["attention"]["latency_s"]}
    timer = "cuda events" if device == "cuda" else "perf_counter"
    if all(r["graphed"] for r in ranks):
        graphed = slowest([r["graphed"] for r in ranks])
        record["latency_s"], record["attention"]["latency_s"] = statistics.median(graphed[1::2]), statistics.median(graphed[0::2])
        record["timed_contexts"] = first["replayed"]
        record["rank_latency_s"] = [statistics.median(r["graphed"][1::2]) for r in ranks]
        record["timer"] = f"{timer}, cuda graph replay, slowest rank"
    else:
        record["timer"] = f"{timer}, eager ({first['how']}), slowest rank"
    record["tokens_per_s"] = config["batch"] / record["latency_s"]
    return record
