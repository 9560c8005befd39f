"""Device-side floors of a CUDA-graph replay, apart from the validation sweep (the graph
engine's profile fields ``graph_launch_s`` and ``launch_overhead_s``), and the rotate-on-load
attention kernel's speed against plain decode at equal bytes. On a CUDA GPU:

    python3 benchmarks/bench_floor.py --out $OUT/h100-floor.jsonl
    python3 benchmarks/bench_floor.py --fit benchmarks/results/h100-floor.jsonl --hw h100   # profile lines

Timed as the runtime times its replays (runtime/measure.py ``_Timer``): the L2 flushed by a
memset before each replay, CUDA events around the replay alone, the median over repeats.
- ``kind: "replay"``: a graph of ``kernels`` launches of a Triton kernel whose ``programs``
  each store one int32 (bytes negligible), kernels 1–64, programs 1 to 16 × the SM count. The
  fit per grid is time = c0 + kernels × t_kernel: c0, the replay's fixed cost, is the profile's
  ``graph_launch_s`` (median over grids) and t_kernel the per-kernel floor by grid.
- ``kind: "rope_load"``: kernels/decode.py ``rope_decode_attention`` (keys rotated as loaded,
  StreamingLLM) and ``decode_attention`` on the same q, K, V (B × Hkv × S rows, d = 128, bf16),
  each in a graph of its own: the ratio of the two at equal bytes, and the rotating kernel's
  own curve (``memory.kernel_efficiency.rope_attention``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.records import append_jsonl, read_jsonl  # noqa: E402

KERNELS = (1, 4, 16, 64)
GRID_PER_SM = (0, 1, 4, 16)  # 0: a single program
# (batch, KV heads, rows): 2 MB to 1 GB of K/V, StreamingLLM's 2005-row window among them
ROPE_SHAPES = ((1, 8, 512), (1, 8, 2005), (2, 8, 2005), (8, 8, 2005), (32, 8, 2005), (8, 32, 2005),
               (8, 8, 16384), (32, 32, 2005))
# (batch, KV heads, rows) of H2O's attention with logits (its cache, 20% of 4k-128k; the MHA
# llama-2 shape among them) and (batch, rows, listed) of ALISA's gathered one
LOGITS_SHAPES = ((1, 8, 820), (1, 8, 3277), (8, 8, 820), (8, 8, 3277), (32, 8, 3277), (1, 8, 13108),
                 (8, 8, 13108), (32, 8, 13108), (8, 32, 3277), (8, 8, 26215))
GATHER_LOGITS_SHAPES = ((1, 16384, 3277), (8, 16384, 3277), (1, 65536, 13108), (8, 65536, 13108), (32, 4096, 820))
QUERY_HEADS = 32
REPEATS = 40


def _store_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def store_one(x_ptr):  # one int32 per program: the launch and nothing else
        tl.store(x_ptr + tl.program_id(0), tl.program_id(0))
    return store_one


def timed_replays(replay, flush) -> float:
    """Median seconds of ``replay`` with the L2 flushed before each (runtime/measure.py _Timer)."""
    import torch
    for _ in range(3):
        replay()
    pairs = []
    for _ in range(REPEATS):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        replay()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) / 1e3 for s, e in pairs)


def replay_records(flush, sms: int) -> list[dict]:
    import torch

    from kvsim.kernels._common import capture_graph
    kernel, out = _store_kernel(), torch.zeros(16 * sms, dtype=torch.int32, device="cuda")
    records = []
    for per_sm in GRID_PER_SM:
        programs = max(per_sm * sms, 1)
        for n in KERNELS:
            replay = capture_graph(lambda: kernel[(programs,)](out), repeat=n)
            records.append({"kind": "replay", "programs": programs, "kernels": n,
                            "time_s": timed_replays(replay, flush)})
    return records


HEAD_DIM = 128


def decode_inputs(B: int, Hkv: int, S: int) -> tuple:
    """q [B, 32, d], K and V [B, Hkv, S, d] (bf16, randn) and the row counts [B] on the GPU."""
    import torch
    q = torch.randn(B, QUERY_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, Hkv, S, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return q, k, v, torch.full((B,), S, dtype=torch.int32, device="cuda")


def moved_bytes(B: int, Hkv: int, rows: int, index_bytes: int = 0) -> int:
    """K/V rows read (with their int32 index if gathered), q read and o written (bf16)."""
    return B * Hkv * rows * (2 * HEAD_DIM * 2 + index_bytes) + 2 * B * QUERY_HEADS * HEAD_DIM * 2


def paired(flush, plain, variant) -> tuple:
    """(plain_s, variant_s): each call alone in a CUDA graph replayed after an L2 flush."""
    from kvsim.kernels._common import capture_graph
    return tuple(timed_replays(capture_graph(call), flush) for call in (plain, variant))


def rope_records(flush) -> list[dict]:
    import torch

    from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS
    from kvsim.kernels._common import splits_for
    from kvsim.kernels.decode import decode_attention, rope_decode_attention
    records, d = [], HEAD_DIM
    for B, Hkv, S in ROPE_SHAPES:
        q, k, v, lens = decode_inputs(B, Hkv, S)
        pos = torch.arange(S, dtype=torch.int32, device="cuda")
        angle = pos[:, None].float() * 10000.0 ** (-torch.arange(d // 2, device="cuda") * 2.0 / d)
        cos, sin = angle.cos().to(torch.bfloat16), angle.sin().to(torch.bfloat16)
        splits = splits_for(B, Hkv, S, target=DENSE_TARGET_PROGRAMS)  # given: no max(seq_lens) sync in the capture
        plain, rope = paired(flush, lambda: decode_attention(q, k, v, lens, num_splits=splits),
                             lambda: rope_decode_attention(q, k, v, lens, pos, cos, sin, num_splits=splits))
        records.append({"kind": "rope_load", "batch": B, "kv_heads": Hkv, "rows": S, "head_dim": d,
                        "kv_bytes": 2 * B * Hkv * S * d * 2, "bytes": moved_bytes(B, Hkv, S),
                        "plain_s": plain, "rope_s": rope})
        del q, k, v
        torch.cuda.empty_cache()
    return records


def logits_records(flush) -> list[dict]:
    """H2O's kernel: decode attention that also writes its fp32 logits, against plain decode on
    the same q, K, V (``logits_load``); ALISA's: the same over a gathered list of rows against the
    gathered kernel without logits (``logits_gather``, one list per sequence for every KV head)."""
    import torch
    records = [logits_load(flush, *shape) for shape in LOGITS_SHAPES]
    records += [logits_gather(flush, *shape) for shape in GATHER_LOGITS_SHAPES]
    torch.cuda.empty_cache()
    return records


def logits_load(flush, B: int, Hkv: int, S: int) -> dict:
    from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS
    from kvsim.kernels._common import splits_for
    from kvsim.kernels.decode import decode_attention
    from kvsim.kernels.scores import decode_attention_with_logits
    q, k, v, lens = decode_inputs(B, Hkv, S)
    splits = splits_for(B, Hkv, S, target=DENSE_TARGET_PROGRAMS)
    plain, both = paired(flush, lambda: decode_attention(q, k, v, lens, num_splits=splits),
                         lambda: decode_attention_with_logits(q, k, v, lens, num_splits=splits))
    return {"kind": "logits_load", "batch": B, "kv_heads": Hkv, "rows": S, "head_dim": HEAD_DIM,
            "query_heads": QUERY_HEADS, "bytes": moved_bytes(B, Hkv, S), "plain_s": plain, "logits_s": both}


def logits_gather(flush, B: int, S: int, K: int, Hkv: int = 8) -> dict:
    import torch

    from kvsim.kernels._common import splits_for
    from kvsim.kernels.gather import gathered_decode_attention
    from kvsim.kernels.scores import decode_attention_with_logits
    q, k, v, _ = decode_inputs(B, Hkv, S)
    idx = torch.stack([torch.randperm(S, device="cuda")[:K].sort().values for _ in range(B)]).int()
    idx = idx[:, None].expand(B, Hkv, K).contiguous()
    cnt = torch.full((B, Hkv), K, dtype=torch.int32, device="cuda")
    splits = splits_for(B, Hkv, K)
    plain, both = paired(flush, lambda: gathered_decode_attention(q, k, v, idx, cnt, num_splits=splits),
                         lambda: decode_attention_with_logits(q, k, v, indices=idx, counts=cnt, num_splits=splits))
    return {"kind": "logits_gather", "batch": B, "kv_heads": Hkv, "rows": K, "seq": S, "head_dim": HEAD_DIM,
            "query_heads": QUERY_HEADS, "bytes": moved_bytes(B, Hkv, K, index_bytes=4),
            "plain_s": plain, "logits_s": both}


def environment() -> dict:
    """bench_launch.py's environment (device, versions, date, command, CPU) and the driver."""
    from bench_launch import environment as launch_environment
    from kvsim.commands.measure import _driver
    return launch_environment() | {"driver": _driver()}


def fit(records: list[dict]) -> dict:
    """Per grid, least squares time = c0 + kernels × t_kernel; graph_launch_s = the median c0,
    the per-kernel floor by programs; the rope/plain ratios."""
    grids = sorted({r["programs"] for r in records if r["kind"] == "replay"})
    per_grid = {}
    for g in grids:
        rows = [(r["kernels"], r["time_s"]) for r in records if r["kind"] == "replay" and r["programs"] == g]
        n, t = np.array(rows, dtype=float).T
        c0, slope = np.linalg.lstsq(np.c_[np.ones_like(n), n], t, rcond=None)[0]
        per_grid[g] = {"c0_s": float(c0), "kernel_s": float(slope)}
    ratios = [r["rope_s"] / r["plain_s"] for r in records if r["kind"] == "rope_load"]
    return {"graph_launch_s": float(np.median([v["c0_s"] for v in per_grid.values()])) if per_grid else None,
            "per_grid": per_grid, "rope_over_plain": ratios}


def rope_curve(records: list[dict], hw) -> list:
    """memory.kernel_efficiency.rope_attention (kvsim.fits.rope_curve_fit): the plain kernel's
    time on ``hw``'s attention curve plus the rotating kernel's extra time at equal conditions."""
    from kvsim.fits import rope_curve_fit
    return rope_curve_fit(records, hw)


def logits_line(records: list[dict], path: str, hw_name: str) -> str:
    """The profile's memory.kernel_efficiency.attention_logits line (kvsim.fits.logits_curve_fit)."""
    from kvsim.fits import logits_curve_fit, rounded_curve
    from kvsim.profiles import load_profile
    hw = load_profile(hw_name)
    rows = [r for r in records if r["kind"] == "logits_load"]
    return (f"    attention_logits: {{points: {rounded_curve(logits_curve_fit(records, hw))}, "
            f"source: \"measured {rows[0].get('date', '')[:10]}, {rows[0].get('device', '?')}: "
            f"python3 benchmarks/bench_floor.py --fit {path} --hw {hw_name}: kernels/scores.py "
            f"decode_attention_with_logits, {len(rows)} shapes (every query head's fp32 logits written, "
            f"32 query heads): the plain kernel's time on this profile's memory.kernel_efficiency.attention "
            f"plus the extra time over plain decode, both alone in CUDA-graph replays after an L2 flush, at "
            f"the bytes kvsim counts (K/V, q, o, logits), over the peak bandwidth\"}}")


def summary(records: list[dict], path: str, hw_name: str | None = None) -> str:
    result = fit(records)
    lines = [f"{'programs':>9} {'c0 us':>8} {'us/kernel':>10}"]
    lines += [f"{g:9d} {v['c0_s'] * 1e6:8.2f} {v['kernel_s'] * 1e6:10.3f}" for g, v in result["per_grid"].items()]
    for r in (r for r in records if r["kind"] == "rope_load"):
        lines.append(f"rope_load B={r['batch']} Hkv={r['kv_heads']} S={r['rows']}: plain {r['plain_s'] * 1e6:.1f} us "
                     f"({r['kv_bytes'] / r['plain_s'] / 1e12:.2f} TB/s), rotate-on-load {r['rope_s'] * 1e6:.1f} us, "
                     f"x{r['rope_s'] / r['plain_s']:.3f}")
    for r in (r for r in records if r["kind"] in ("logits_load", "logits_gather")):
        lines.append(f"{r['kind']} B={r['batch']} Hkv={r['kv_heads']} rows={r['rows']}: plain {r['plain_s'] * 1e6:.1f} us, "
                     f"with logits {r['logits_s'] * 1e6:.1f} us, x{r['logits_s'] / r['plain_s']:.3f}")
    if result["graph_launch_s"] is not None:
        device = next((r.get("device") for r in records if r.get("device")), "?")
        lines.append(f"graph_launch_s: {{value: {result['graph_launch_s']:.3g}, source: \"measured "
                     f"{records[0].get('date', '')[:10]}, {device}: python3 benchmarks/bench_floor.py --fit {path}: "
                     f"intercept of CUDA-graph replay time against kernels (1-64 one-store Triton kernels, L2 "
                     f"flushed before each replay), median over {len(result['per_grid'])} grid sizes\"}}")
    if hw_name and any(r["kind"] == "logits_load" for r in records):
        lines.append(logits_line(records, path, hw_name))
    rope = [r for r in records if r["kind"] == "rope_load"]
    if hw_name and rope and result["per_grid"]:
        from kvsim.fits import rounded_curve
        from kvsim.profiles import load_profile
        hw = load_profile(hw_name)
        if "attention" not in hw.memory.kernel_efficiency:
            lines.append(f"    (no rope_attention line: {hw.name} has no memory.kernel_efficiency.attention to add "
                         "the rotation's extra time to; fit benchmarks/bench_kernels.py first)")
            return "\n".join(lines)
        points = rope_curve(records, hw)
        lines.append(f"    rope_attention: {{points: {rounded_curve(points)}, "
                     f"source: \"measured {records[0].get('date', '')[:10]}, {records[0].get('device', '?')}: "
                     f"python3 benchmarks/bench_floor.py --fit {path} --hw {hw_name}: kernels/decode.py "
                     f"rope_decode_attention, {len(rope)} shapes (K/V rows rotated as loaded, 32 query heads): "
                     f"the plain kernel's time on this profile's memory.kernel_efficiency.attention plus the "
                     f"rotating kernel's extra time over plain decode, both alone in CUDA-graph replays after an "
                     f"L2 flush (the replay's fixed cost, the combine kernel and the flush cancel), at the bytes "
                     f"kvsim counts (K/V, q, o, slot positions, cos/sin rows), over the peak bandwidth\"}}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="JSONL to append the measurements to (needs CUDA)")
    ap.add_argument("--fit", help="a JSONL written by --out: print the fit and the profile lines")
    ap.add_argument("--hw", help="with --fit: the profile whose peak bandwidth the rope curve is over")
    ap.add_argument("--only-logits", action="store_true", help="with --out: only the kernels with logits")
    args = ap.parse_args()
    if args.fit:
        print(summary(read_jsonl(args.fit), args.fit, args.hw))
        return
    if not args.out:
        ap.error("give --out (measure) or --fit (fit a file)")
    import torch
    if not torch.cuda.is_available():
        sys.exit("bench_floor: needs a CUDA GPU")
    from kvsim.runtime.measure import l2_flush_bytes
    flush = torch.empty(l2_flush_bytes(torch.device("cuda")) // 4, dtype=torch.int32, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    env = environment()
    if not args.only_logits:
        append_jsonl(args.out, [env | r for r in replay_records(flush, sms)])  # kept if the rope part fails
        append_jsonl(args.out, [env | r for r in rope_records(flush)])
    append_jsonl(args.out, [env | r for r in logits_records(flush)])
    print(summary(read_jsonl(args.out), args.out))


if __name__ == "__main__":
    main()
