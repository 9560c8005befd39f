"""SparQ step 2 (approximate scores + their group sum, kvsim/methods/sparq/kernels.py): time launch configs of
the logits and normalising kernels by CUDA-graph replay over rotated inputs (cold L2), and the
fraction of HBM peak each reaches. On a CUDA GPU:
    python3 benchmarks/tune_sparq.py [--out $OUT/h100-sparq-tune.jsonl]
"""
import argparse
import itertools
import os
import sys

import torch
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.bench_kernels import environment  # noqa: E402
from kvsim.kernels import _common  # noqa: E402
from kvsim.methods.sparq.kernels import sparq_scores_and_group  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402



def peak_Bps() -> float:
    """The running GPU's datasheet bandwidth, from its profile (the H100's where none matches)."""
    from kvsim.profiles import load_profile, profile_for_device
    return load_profile(profile_for_device(torch.cuda.get_device_name()) or "h100-sxm").memory.bandwidth_Bps.value
LOGITS = list(itertools.product([128, 256, 512, 1024], [4, 8], [2, 3, 4]))  # BLOCK_S, warps, stages
NORM = list(itertools.product([512, 1024, 2048, 4096], [4, 8]))  # BLOCK, warps


def inputs(B, S, r=16, H=32, Hkv=8, d=128, sets=4):
    out = []
    for _ in range(sets):
        k_t = torch.randn(B, Hkv, d, S, device="cuda", dtype=torch.bfloat16)
        i1 = torch.stack([torch.randperm(d, device="cuda")[:r] for _ in range(B * Hkv)]).reshape(B, Hkv, r)
        out.append((torch.randn(B, H, d, device="cuda", dtype=torch.bfloat16), k_t, i1.int(),
                    torch.full((B,), S, device="cuda", dtype=torch.int32), torch.ones(B, H, device="cuda")))
    return out


def timed(data, splits) -> float:
    call = lambda: [sparq_scores_and_group(*x, local=64, num_splits=splits) for x in data]  # noqa: E731
    return do_bench_cudagraph(call, rep=50, return_mode="median") / len(data) / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for B, S in ((8, 65536), (1, 131072)):
        data = inputs(B, S)
        splits = _common.splits_for(B, 8, S)
        moved = B * 8 * S * 16 * 2 + 3 * B * 32 * S * 4 + B * 8 * S * 4  # K rows, logits w/r/w, group
        for bs, w, st in LOGITS:
            _common.set_config("sparq_logits", BLOCK_S=bs, num_warps=w, num_stages=st)
            t = timed(data, splits)
            rows.append({"B": B, "S": S, "logits": [bs, w, st], "norm": dict(_common.CONFIGS["sparq_norm"]),
                         "s": t, "frac_peak": moved / t / peak_Bps()})
        best = min((x for x in rows if x["B"] == B), key=lambda x: x["s"])
        _common.set_config("sparq_logits", **dict(zip(("BLOCK_S", "num_warps", "num_stages"), best["logits"])))
        for blk, w in NORM:
            _common.set_config("sparq_norm", BLOCK=blk, num_warps=w)
            t = timed(data, splits)
            rows.append({"B": B, "S": S, "logits": best["logits"], "norm": {"BLOCK": blk, "num_warps": w},
                         "s": t, "frac_peak": moved / t / peak_Bps()})
        for x in sorted((x for x in rows if x["B"] == B), key=lambda x: x["s"])[:6]:
            print(f"B={B} S={S} logits {x['logits']} norm {x['norm']} {x['s'] * 1e6:8.1f} us "
                  f"{100 * x['frac_peak']:5.1f}% of peak", flush=True)
        _common.CONFIGS["sparq_norm"].update(BLOCK=1024, num_warps=4)
    if args.out:
        env = environment()
        append_jsonl(args.out, [{**env, **x} for x in rows])



if __name__ == "__main__":
    main()
