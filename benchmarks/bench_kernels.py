"""Kernel benchmark on a CUDA GPU (issue 4): the dense split-K decode kernel's achieved HBM
bandwidth against torch SDPA in the same run, and each sparse kernel's speedup over the dense
kernel at 128k against the ratio of bytes it must read.

    python3 benchmarks/bench_kernels.py --out benchmarks/results/h100-kernels.jsonl
    python3 benchmarks/bench_kernels.py --fit benchmarks/results/h100-kernels.jsonl --hw h100 \
        --launch benchmarks/results/h100-launch.jsonl
        # the dense rows as the profile's memory.kernel_efficiency.attention line

Timing: triton.testing.do_bench, median, after warm-up; buffers rotate so that the working set
is at least 4x the L2 (cold L2). Bytes are the fewest the kernel must move (K/V rows read once,
q read, o written). Prints a table last; appends JSON lines with device, driver, versions, date
and command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys

import torch
import triton
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.kernels.decode import decode_attention, windowed_decode_attention  # noqa: E402
from kvsim.kernels.gather import gathered_decode_attention  # noqa: E402
from kvsim.kernels.int8kv import decode_attention_int8, quantize_kv  # noqa: E402
from kvsim.methods.quest.kernels import quest_page_scores  # noqa: E402
from kvsim.methods.sparq.kernels import sparq_approx_scores  # noqa: E402
from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS, split_count  # noqa: E402
from kvsim.records import read_jsonl  # noqa: E402

H, HKV, D = 32, 8, 128
G = H // HKV


def peak_bps() -> float:
    """The datasheet bandwidth of the GPU this runs on, from its profile (hw_profiles/)."""
    from kvsim.profiles import load_profile, profile_for_device
    name = profile_for_device(torch.cuda.get_device_name())
    if name is None:
        sys.exit(f"no profile in hw_profiles/ names this GPU ({torch.cuda.get_device_name()}); add its device_names")
    return load_profile(name).memory.bandwidth_Bps.value
DT = torch.bfloat16


def environment() -> dict:
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        driver = "unknown"
    return {"device": torch.cuda.get_device_name(), "driver": driver, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 " + " ".join(sys.argv)}


def copies(bytes_read: int, l2: int) -> int:
    """Input sets to cycle through so that one pass over them is at least 4x the L2."""
    return max(1, min(8, math.ceil(4 * l2 / max(bytes_read, 1))))


def time_ms(calls) -> float:
    """Median time of one call, each replay of a CUDA graph running every call once (one per
    input set, so the L2 stays cold and host launch overhead is out of the number)."""
    def run_all():
        for call in calls:
            call()
    return do_bench_cudagraph(run_all, rep=100, return_mode="median") / len(calls)


def kv(B, S):
    k = torch.randn(B, HKV, S, D, device="cuda", dtype=DT)
    v = torch.randn(B, HKV, S, D, device="cuda", dtype=DT)
    q = torch.randn(B, H, D, device="cuda", dtype=DT)
    lens = torch.full((B,), S, device="cuda", dtype=torch.int32)
    return q, k, v, lens


def dense_point(B, S, l2) -> dict:
    kv_bytes = 2 * B * HKV * S * D * 2
    moved = kv_bytes + 2 * B * H * D * 2
    sets = [kv(B, S) for _ in range(copies(kv_bytes, l2))]
    splits = int(split_count(B, HKV, S, DENSE_TARGET_PROGRAMS))  # the dense kernel's policy, on the host
    ours = time_ms([lambda s=s: decode_attention(*s, num_splits=splits) for s in sets])
    row = {"kernel": "dense", "batch": B, "seq": S, "bytes": moved, "ours_ms": ours,
           "ours_TBps": moved / ours / 1e9}
    try:
        sdpa = torch.nn.functional.scaled_dot_product_attention
        row["sdpa_ms"] = time_ms([lambda s=s: sdpa(s[0][:, :, None], s[1], s[2], enable_gqa=True) for s in sets])
        row["sdpa_TBps"] = moved / row["sdpa_ms"] / 1e9
        row["ours_over_sdpa"] = row["sdpa_ms"] / ours
    except torch.OutOfMemoryError:
        row["sdpa_ms"] = None
    torch.cuda.empty_cache()
    return row


def random_indices(B, heads, K, S, device="cuda"):
    idx = torch.rand(B, heads, S, device=device).argsort(dim=-1)[..., :K].to(torch.int32)
    return idx, torch.full((B, heads), K, device=device, dtype=torch.int32)


def sparse_points(B, S, t_dense, l2) -> list[dict]:
    """Each sparse kernel at context S; input sets rotate like the dense ones (the fewer bytes a
    kernel reads, the more sets), so its rows come from HBM, not from the L2."""
    pool = [kv(B, S) for _ in range(copies(2 * B * HKV * 4096 * D * 2, l2))]
    splits = int(split_count(B, HKV, S))  # the runtime knows its lengths on the host
    dense_bytes = 2 * B * HKV * S * D * 2
    rows = []

    def add(name, make_call, bytes_read, prepare=lambda s: s):
        sets = [prepare(s) for s in pool[: copies(bytes_read, l2)]]
        ms = time_ms([make_call(s) for s in sets])
        speed, ratio = t_dense / ms, dense_bytes / bytes_read
        rows.append({"kernel": name, "batch": B, "seq": S, "ours_ms": ms, "bytes": bytes_read,
                     "ours_TBps": bytes_read / ms / 1e9, "byte_ratio": ratio, "speedup": speed,
                     "fraction_of_ratio": speed / ratio})

    for K in (4096, 16384):
        idx, cnt = random_indices(B, HKV, K, S)
        add(f"gathered/kv-head k={K}", lambda s: lambda: gathered_decode_attention(s[0], s[1], s[2], idx, cnt),
            2 * B * HKV * K * D * 2 + B * HKV * K * 4)
        half, _ = random_indices(B, HKV, K // 2, S - K // 2)  # ALISA's list: top-k ∪ the last K/2 rows
        recent = torch.arange(S - K // 2, S, device="cuda", dtype=torch.int32).expand(B, HKV, K // 2)
        widx = torch.cat([half, recent], -1)
        add(f"window-half/kv-head k={K}", lambda s: lambda: gathered_decode_attention(s[0], s[1], s[2], widx, cnt),
            2 * B * HKV * K * D * 2 + B * HKV * K * 4)
        qidx, qcnt = random_indices(B, H, K, S)
        union = (qidx.view(B, HKV, G * K).sort(-1).values.diff(dim=-1) != 0).sum().item() + B * HKV
        add(f"gathered/q-head k={K}", lambda s: lambda: gathered_decode_attention(s[0], s[1], s[2], qidx, qcnt),
            2 * union * D * 2 + B * H * K * 4)
    full = torch.zeros(HKV, dtype=torch.bool, device="cuda")
    full[: HKV // 2] = True
    add("windowed/duo half retrieval",
        lambda s: lambda: windowed_decode_attention(*s, 64, 256, full, num_splits=splits),
        dense_bytes // 2 + 2 * B * (HKV // 2) * 320 * D * 2)
    add("int8 decode", lambda s: lambda: decode_attention_int8(s[0], *s[1:], num_splits=splits),
        2 * B * HKV * S * (D + 4),
        prepare=lambda s: (s[0], *quantize_kv(s[1])[:1], *quantize_kv(s[2])[:1], *quantize_kv(s[1])[1:],
                           *quantize_kv(s[2])[1:], s[3]))
    r = D // 8
    i1 = torch.randint(0, D, (B, HKV, r), device="cuda", dtype=torch.int32)
    tau = torch.full((B, H), math.sqrt(D), device="cuda")
    add(f"sparq approx scores r={r}",
        lambda s: lambda: sparq_approx_scores(s[0], s[1], i1, s[3], tau, num_splits=splits),
        B * HKV * S * r * 2 + 2 * B * H * S * 4,
        prepare=lambda s: (s[0], s[1].transpose(-1, -2).contiguous(), None, s[3]))
    P = S // 16
    pages = torch.full((B,), P, device="cuda", dtype=torch.int32)
    add("quest page scores", lambda s: lambda: quest_page_scores(s[0], s[1], s[2], pages),
        2 * B * HKV * P * D * 2 + B * H * P * 4,
        prepare=lambda s: (s[0], s[1][:, :, :P].clone(), s[2][:, :, :P].clone()))
    return rows


def graph_launch_floor(launch_path: str) -> float:
    """A Triton kernel's device-side time in a CUDA graph (benchmarks/bench_launch.py gpu_s)."""
    return next(r["gpu_s"] for r in read_jsonl(launch_path) if r.get("op") == "triton kernel, 22 args")


def fit_line(paths: list, hw_name: str, launch_path: str) -> str:
    """The profile's memory.kernel_efficiency.attention line from a file this script wrote, each
    call less one combine kernel (the Triton launch floor of ``launch_path``) where it splits."""
    from kvsim.fits import attention_curve_fit, rounded_curve
    from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS
    from kvsim.profiles import load_profile
    hw = load_profile(hw_name)
    records = [r for path in paths for r in read_jsonl(path)]
    path = " ".join(paths)
    combine_s = graph_launch_floor(launch_path)
    points = attention_curve_fit(records, hw.memory.bandwidth_Bps.value, combine_s, DENSE_TARGET_PROGRAMS)
    date = " and ".join(sorted({r["date"][:10] for r in records if r.get("date")}))  # every file's day
    return (f"    attention: {{points: {rounded_curve(points)}, "
            f"source: \"measured {date}, {records[0].get('device', hw.name)}: {path} (python3 "
            f"benchmarks/bench_kernels.py --fit {path} --hw {hw.name}): the dense split-K decode kernel, "
            f"{sum(r.get('kernel') == 'dense' for r in records)} shapes (batch {min(r['batch'] for r in records)}-"
            f"{max(r['batch'] for r in records)}, {min(r['seq'] for r in records)}-{max(r['seq'] for r in records)} rows, cold L2), "
            f"its bytes over its time less the combine kernel where it splits ({combine_s * 1e6:.2f} us, "
            f"{launch_path}), "
            f"over the peak bandwidth; median of equal sizes, never falling\"}}")


def gather_line(paths: list, hw_name: str) -> str:
    """The profile's memory.gather_efficiency line: the gathered kernels of ``paths`` against the
    profile's own attention curve at their sizes (kvsim.fits.gather_efficiency_fit)."""
    from kvsim.fits import gather_efficiency_fit
    from kvsim.profiles import load_profile
    hw = load_profile(hw_name)
    records = [r for path in paths for r in read_jsonl(path)]
    fit = gather_efficiency_fit(records, hw.memory.kernel_efficiency["attention"].points, hw.memory.bandwidth_Bps.value)
    path = " ".join(paths)
    return (f"  gather_efficiency: {{value: {fit['gather_efficiency']:.3f}, source: 'measured, "
            f"{records[0].get('device', hw.name)}: {path} (python3 benchmarks/bench_kernels.py --fit {path} "
            f"--hw {hw.name}): the {fit['kernels']} gathered decode kernels (per-KV-head and per-query-head lists "
            f"of random rows) against the profile''s attention curve at the same bytes: {fit['min']:.2f}-"
            f"{fit['max']:.2f}, median {fit['gather_efficiency']:.3f}'}}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--fit", nargs="+", help="files written by --out: print the attention curve's profile line")
    parser.add_argument("--dense-only", action="store_true", help="only the dense kernel's shapes (no sparse kernels at 128k)")
    parser.add_argument("--hw", default="h100", help="with --fit: the profile whose peak bandwidth to use")
    parser.add_argument("--launch", help="with --fit: bench_launch.py's file (default: --fit's name, -launch)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seqs", default="4096,32768,131072")
    args = parser.parse_args()
    if args.fit:
        print(fit_line(args.fit, args.hw, args.launch or args.fit[0].replace("-kernels", "-launch")))
        print(gather_line(args.fit, args.hw))
        return
    if not args.out:
        parser.error("give --out (measure) or --fit (fit a file)")
    env = environment()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    results = []
    for B in map(int, args.batches.split(",")):
        for S in map(int, args.seqs.split(",")):
            results.append(dense_point(B, S, l2))
    for B in () if args.dense_only else (1, 8):
        t_dense = next(r["ours_ms"] for r in results if r["batch"] == B and r["seq"] == 131072)
        results += sparse_points(B, 131072, t_dense, l2)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as out:
        out.write("".join(json.dumps({**env, **r}) + "\n" for r in results))
    print(f"{env['device']}  driver {env['driver']}  torch {env['torch']}  triton {env['triton']}")
    print(f"{'kernel':<30}{'B':>4}{'S':>8}{'ms':>9}{'TB/s':>7}{'%peak':>7}{'sdpa ms':>9}{'vs sdpa':>8}{'x dense':>8}{'ratio':>7}{'frac':>6}")
    peak = peak_bps()
    for r in results:
        tbps = r.get("ours_TBps")
        print(f"{r['kernel']:<30}{r['batch']:>4}{r['seq']:>8}{r['ours_ms']:>9.3f}"
              f"{tbps or 0:>7.2f}{100 * (tbps or 0) * 1e12 / peak:>6.0f}%"
              f"{r.get('sdpa_ms') or 0:>9.3f}{r.get('ours_over_sdpa', 0):>8.2f}"
              f"{r.get('speedup', 0):>8.1f}{r.get('byte_ratio', 0):>7.1f}{r.get('fraction_of_ratio', 0):>6.2f}")


if __name__ == "__main__":
    main()
