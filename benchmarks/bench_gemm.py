"""bf16 GEMMs of a decode step (F.linear, cuBLAS) at the token counts decoding pushes through the
layers: B tokens, or B·(R+1) for ADORE's reconstruction (up to 32 × 9 = 288), on the layer
shapes of llama-3.1-8b and llama-2-7b, by CUDA-graph replay over rotated weights (cold L2).
These give a profile's measured compute efficiency by FLOPs per kernel and the tile height a
GEMM's rows are padded to (``--fit``), kept apart from the datasheet peak. H100, 2026-11-26:
time per 128-row tile is flat from 288 to 2048 tokens (288 tokens take 3 tiles: 148 us for
llama-3.1's gate/up against 176 us for 512), which the plain roofline misses by 30%. On a CUDA GPU:
    python3 benchmarks/bench_gemm.py --out $OUT/h100-gemm.jsonl
Anywhere, the compute efficiency curve for each candidate tile height from such a file:
    python3 benchmarks/bench_gemm.py --fit benchmarks/results/h100-gemm.jsonl --hw h100-sxm
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TOKENS = (1, 8, 32, 72, 128, 288, 512, 1024, 2048)
MODELS = ("llama-3.1-8b", "llama-2-7b")
KNOTS = (1e9, 1e10, 1e11, 1e12)  # FLOPs per kernel of the fitted curve


def layer_gemms(name: str) -> list[tuple[str, int, int]]:
    """(what, N, K) of one layer: fused QKV, O, fused gate+up, down."""
    from kvsim.models import load_model
    m = load_model(name)
    return [("qkv", m.q_dim + 2 * m.kv_dim, m.d_model), ("o", m.d_model, m.q_dim),
            ("gate_up", 2 * m.ffn_dim if m.mlp == "swiglu" else m.ffn_dim, m.d_model),
            ("down", m.d_model, m.ffn_dim)]


def measure(out_path):
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench_cudagraph

    from benchmarks.bench_kernels import environment
    from kvsim.records import append_jsonl
    env, rows = environment(), []
    for model in MODELS:
        for what, N, K in layer_gemms(model):
            sets = max(2, -(-200_000_000 // (2 * N * K)))  # ≥ 200 MB of weights per pass: cold L2
            weights = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(sets)]
            for M in TOKENS:
                x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
                t = do_bench_cudagraph(lambda: [F.linear(x, w) for w in weights], rep=40,
                                       return_mode="median") / sets * 1e-3
                row = {**env, "model": model, "gemm": what, "M": M, "N": N, "K": K, "s": t,
                       "flops": 2 * M * N * K, "bytes": 2 * (N * K + M * K + M * N)}
                rows.append(row)
                print(f"{model:13s} {what:8s} M={M:5d} N={N:6d} K={K:6d} {t * 1e6:8.1f} us "
                      f"{row['flops'] / t / 1e12:6.1f} TFLOP/s {row['bytes'] / t / 1e9:7.0f} GB/s", flush=True)
            del weights
    if out_path:
        append_jsonl(out_path, rows)


def fit(records, hw_name, tiles=(1, 64, 128, 256)):
    """For each candidate tile height: compute efficiency at KNOTS fitted (least squares in log
    space) to the GEMMs of ≥ 128 tokens, as kvsim's roofline times them (max of compute, memory
    on the profile's curve, launch floor) with the rows padded to whole tiles; errors over those
    and over all. Below 1e9 FLOPs a decode GEMM is memory-bound: those knots are not identified."""
    import numpy as np
    from scipy.optimize import least_squares

    from kvsim.profiles import load_profile
    hw = load_profile(hw_name)
    M = np.array([r["M"] for r in records], float)
    flops = np.array([r["flops"] for r in records], float)
    moved = np.array([r["bytes"] for r in records], float)
    t = np.array([r["s"] for r in records], float)
    memory = np.maximum(moved / (hw.memory.bandwidth_Bps.value * hw.memory.efficiency.at(moved)),
                        hw.launch_overhead_s.value)
    big = M >= 128
    out = {}
    for tile in tiles:
        padded = flops * np.ceil(M / tile) * tile / M

        def predicted(effs):
            eff = np.interp(np.log10(padded), np.log10(KNOTS), effs)
            return np.maximum(memory, padded / (hw.compute.peak("bf16") * eff))

        effs = least_squares(lambda e: np.log(predicted(e)[big] / t[big]), x0=[0.3, 0.5, 0.7, 0.7],
                             bounds=(1e-3, 1.0)).x
        effs = np.maximum.accumulate(effs)  # more work per kernel never runs at a lower fraction
        err = np.abs(predicted(effs) / t - 1)
        out[tile] = {"points": [[k, round(float(e), 3)] for k, e in zip(KNOTS, effs)],
                     "gemms": int(big.sum()), "median_err": round(float(np.median(err[big])), 3),
                     "p90_err": round(float(np.percentile(err[big], 90)), 3),
                     "max_err": round(float(err[big].max()), 3),
                     "median_err_all": round(float(np.median(err)), 3)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--fit", help="a JSONL of this script's runs: print the fitted efficiency curve")
    ap.add_argument("--hw", default="h100-sxm", help="profile whose memory curve and peak the fit uses")
    args = ap.parse_args()
    if args.fit:
        with open(args.fit) as f:
            print(fit([json.loads(line) for line in f if line.strip()], args.hw))
        return
    measure(args.out)


if __name__ == "__main__":
    main()
