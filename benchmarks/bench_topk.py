"""torch.topk, sorted and unsorted, at the row shapes the methods select over (SparQ, ALISA,
Quest, TidalDecode at 64k/128k), by CUDA-graph replay over rotated inputs: what the runtime's
selections cost next to the one launch and one read kvsim charges (kvsim.methods.attention
topk_op), and with ``--single-block`` over a grid of the shapes where torch takes its
single-block radix select (one thread block per row; kvsim.methods.attention
torch_topk_multiblock says which), the shapes a profile's ``topk.single_block`` is fitted to.
2026-11-26: a one-program-per-row Triton radix select was 5-17x slower than
torch.topk(sorted=False) at the long rows (too few programs) and was dropped. On a CUDA GPU:
    python3 benchmarks/bench_topk.py [--single-block] [--out $OUT/h100-topk.jsonl]
``--data scores`` times the same shapes on rows like ALISA's accumulated scores (each row the
sum of 32 heads' softmax probabilities over random logits: positive, a narrow range of
exponents) instead of randn rows (signed, like the logits SparQ, Quest and TidalDecode select on);
radix select's passes depend on the bits it finds. Records carry ``data``.
``--step-topk alisa:16384x1,adore:16384x1`` times a method's own top-k call (an 8-layer llama-3.1-8b
engine after 3 steps: ALISA's layer 0 ``acc[:, :n-k].topk(k, sorted=False)``, ADORE's top-R of the
released tokens' scores) alone by CUDA-graph replay on its own input, on a contiguous copy of it,
on randn and on summed-softmax rows of its shape, and in the attention-only step by
torch.profiler in the same process: what separates the step's top-k from the law fitted to the
microbenchmark (records ``path: "alisa-step"``, ``"adore-step"``).
``--input-grid alisa,adore`` times each method's own top-k input alone over a grid of contexts and
batches (a one-layer llama-3.1-8b engine after 2 steps; records ``data``: ``accumulated`` for
ALISA's summed attention weights, ``released`` for ADORE's released tokens' sigmoid scores with
−inf elsewhere) next to randn rows of the same shape, as the step calls it (a view), and the
radix passes each needs (``passes_own``, ``passes_randn``: kvsim.kernel_contract.radix_select_passes).
``--passes alisa:16384x1,...`` (any device; the CPU runs the one-layer engine in seconds) counts
only the passes: torch's single-block select narrows the k-th value's bit prefix 2 bits a pass,
each pass a scan of the whole row, and stops once that prefix is the k-th value's alone, so a
row's time follows how many of its top bits the k-th value shares with other values.
Anywhere (no GPU), the single-block law of a profile's ``topk.single_block`` from such a file:
    python3 benchmarks/bench_topk.py --fit benchmarks/results/h100-topk-single.jsonl --sms 132
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.bench_kernels import environment  # noqa: E402
from kvsim.kernel_contract import radix_select_passes, torch_topk_multiblock  # noqa: E402
from kvsim.fits import topk_single_block_fit as fit_single_block  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402

SHAPES = [  # (what, rows, n, k)
    ("sparq B=8 S=64k", 64, 65536, 4096), ("sparq B=1 S=128k", 8, 131072, 8192),
    ("alisa B=8 S=64k", 8, 52429, 6554), ("alisa B=1 S=128k", 1, 104858, 13107),
    ("quest B=8 S=64k", 256, 4095, 255), ("tidal B=8 S=64k", 256, 65535, 256),
]


SINGLE_ROWS = (1, 8, 32, 128, 256, 1024, 4096)
SINGLE_SIZES = (256, 512, 2048, 4096, 8192, 16384, 19999)


def single_block_shapes():
    """(what, rows, n, k) below torch's multi-block thresholds; k = n/8, and n/64, n/3 at one row
    count to show what k adds."""
    shapes = [(f"single rows={r} n={n}", r, n, n // 8) for r in SINGLE_ROWS for n in SINGLE_SIZES
              if not torch_topk_multiblock(r, n)]
    return shapes + [(f"single rows=32 n=8192 k={k}", 32, 8192, k) for k in (128, 2730)]


SCORE_HEADS = 32  # ALISA sums the weights of every query head (llama-3.1-8b: 32)


def rows_of(data: str, rows: int, n: int):
    """[rows, n] fp32 on the GPU: randn, or the sum of SCORE_HEADS softmax rows of randn logits
    (one query per head against random keys: logits of unit spread, as runtime.synthetic draws)."""
    import torch
    if data == "randn":
        return torch.randn(rows, n, device="cuda")
    out = torch.zeros(rows, n, device="cuda")
    for _ in range(SCORE_HEADS):  # one head at a time: [rows, n] temporaries only
        out += torch.randn(rows, n, device="cuda").softmax(-1)
    return out


def timed(fn, sets) -> float:
    from triton.testing import do_bench_cudagraph
    return do_bench_cudagraph(lambda: [fn(x) for x in sets], rep=50, return_mode="median") / len(sets) * 1e3


def step_topk_input(method, name: str):
    """(row [B, n] view, k) of the top-k call ``name``'s step makes next (its runtime's own)."""
    n = method.n + 1
    if name == "alisa":  # layer 0's accumulated scores before its local window
        k = method.window(n)
        return method.acc[0][:, : n - k], min(k, n - k)
    # adore: the released tokens' scores (cached ones at -inf), top-R once per step for all layers
    return method.rebuild_score, min(method.p["R"], method.n - method.count)


def method_configs(text: str) -> list[tuple[str, int, int]]:
    """'alisa:16384x1,adore:4096x8' -> [(method, seq, batch), ...]."""
    out = []
    for config in text.split(","):
        name, shape = config.split(":")
        seq, batch = (int(x) for x in shape.split("x"))
        out.append((name, seq, batch))
    return out


def step_topk_rows(configs: str, env: dict) -> list:
    """``--step-topk``: a method's own top-k call at each METHOD:SEQxBATCH, alone on several
    inputs and in the attention-only step (module docstring)."""
    import torch
    from benchmarks.profile_steps import kernel_table
    from kvsim.runtime.measure import _engine
    from kvsim.runtime.sweep_process import cut_model_params
    out = []
    for name, seq, batch in method_configs(configs):
        engine, _ = _engine(name, seq, batch, "llama-3.1-8b", 8, cut_model_params(name, 8), 8)
        for _ in range(3):
            engine.step()
        view, kk = step_topk_input(engine.method, name)
        n = view.shape[-1]
        alone = {key: timed(lambda x: x.topk(kk, dim=-1, sorted=False), [x]) for key, x in (
            ("own_view_us", view), ("own_copy_us", view.contiguous()),
            ("randn_us", rows_of("randn", batch, n)), ("scores_us", rows_of("scores", batch, n)))}
        table = kernel_table(engine, engine.attention_only_step, 40)
        calls = engine.spec.n_layers if name == "alisa" else 1
        in_step = sum(r["us"] for r in table if "TopK" in r["kernel"]) / calls
        row = {**env, "what": f"{name} S={seq} B={batch}", "path": f"{name}-step", "rows": batch, "n": n,
               "k": kk, **alone, "in_step_us": in_step}
        out.append(row)
        print(f"{row['what']:18s} n={n} k={kk}: in step {in_step:6.1f} us; alone: "
              + ", ".join(f"{key[:-3]} {v:6.1f}" for key, v in alone.items()), flush=True)
        del engine, view
        torch.cuda.empty_cache()
    return out


INPUT_KINDS = {"alisa": "accumulated", "adore": "released"}  # the top-k input each method's runtime makes
INPUT_GRID = [(s, b) for s in (2048, 4096, 8192, 16384, 20480, 65536) for b in (1, 4, 8, 16, 32)]


def own_rows(name: str, seq: int, batch: int, **engine_kw):
    """(view, k) of the top-k the method's one-layer llama-3.1-8b engine makes after 2 steps."""
    from kvsim.runtime.measure import _engine
    engine, _ = _engine(name, seq, batch, "llama-3.1-8b", 1, {}, 2, **engine_kw)
    for _ in range(2):
        engine.step()
    return step_topk_input(engine.method, name)


def passes_of(name, view, k: int) -> dict:
    """The input's shape and the mean radix passes of its rows and of 64 or more randn rows of its length."""
    import numpy as np
    own = view.float().cpu().numpy()
    randn = np.random.default_rng(0).standard_normal((max(own.shape[0], 64), own.shape[1])).astype(np.float32)
    return {"data": INPUT_KINDS[name], "rows": own.shape[0], "n": own.shape[1], "k": k,
            "passes_own": float(radix_select_passes(own, k).mean()),
            "passes_randn": float(radix_select_passes(randn, k).mean())}


def input_grid_rows(methods: str, env: dict, out_path=None, grid=INPUT_GRID) -> list:
    """``--input-grid``: each method's own top-k input, alone, at every (context, batch) of
    ``grid``, next to randn rows of its shape; each shape appended to ``out_path`` as it ends."""
    import torch
    out = []
    for name in methods.split(","):
        for seq, batch in grid:
            view, kk = own_rows(name, seq, batch)
            if kk == 0:  # ADORE below m + 1 tokens: nothing released, no top-k
                continue
            call = lambda x: x.topk(kk, dim=-1, sorted=False)  # noqa: E731
            row = {**env, "what": f"{name} S={seq} B={batch}", **passes_of(name, view, kk),
                   "path": "multi-block" if torch_topk_multiblock(*view.shape) else "single-block",
                   "torch_unsorted_us": timed(call, [view.contiguous()]),
                   "randn_us": timed(call, [rows_of("randn", *view.shape)]), "view_us": timed(call, [view])}
            out.append(row)
            if out_path:
                append_jsonl(out_path, [row])
            print(f"{row['what']:20s} {row['path']:12s} n={row['n']:6d} k={kk:5d}: own {row['torch_unsorted_us']:6.1f}"
                  f" us, randn {row['randn_us']:6.1f} us, view {row['view_us']:6.1f} us; passes "
                  f"{row['passes_own']:.1f} vs {row['passes_randn']:.1f}", flush=True)
            del view
            torch.cuda.empty_cache()
    return out


def host_environment() -> dict:
    import datetime
    import platform
    import torch
    return {"device": f"cpu ({platform.processor() or platform.machine()})", "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 " + " ".join(sys.argv)}


def passes_rows(configs: str, env: dict, device: str) -> list:
    """``--passes``: the radix passes of each METHOD:SEQxBATCH's own top-k rows and of randn rows."""
    out = []
    for name, seq, batch in method_configs(configs):
        view, kk = own_rows(name, seq, batch, device=device)
        if kk == 0:  # ADORE below m + 1 tokens: nothing released, no top-k
            continue
        out.append({**env, "what": f"{name} S={seq} B={batch}", "path": "passes", **passes_of(name, view, kk)})
        print(f"{out[-1]['what']:20s} n={view.shape[1]} k={kk}: passes {out[-1]['passes_own']:.1f} own, "
              f"{out[-1]['passes_randn']:.1f} randn", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--single-block", action="store_true", help="the single-block grid instead")
    ap.add_argument("--fit", help="a JSONL of this script's --single-block runs: print the law")
    ap.add_argument("--sms", type=int, default=132, help="streaming multiprocessors (H100 SXM: 132)")
    ap.add_argument("--data", choices=("randn", "scores"), default="randn",
                    help="rows of randn values, or of summed softmax probabilities (ALISA's scores)")
    ap.add_argument("--step-topk", metavar="METHOD:SEQxBATCH,...",
                    help="ALISA's or ADORE's own top-k, alone and in the step")
    ap.add_argument("--input-grid", metavar="METHOD,...", help="ALISA's or ADORE's own top-k input over a grid")
    ap.add_argument("--passes", metavar="METHOD:SEQxBATCH,...", help="the radix passes of their own rows only")
    ap.add_argument("--device", default="cuda", help="with --passes: where the engine runs (cpu: no GPU needed)")
    args = ap.parse_args()
    if args.input_grid:
        input_grid_rows(args.input_grid, environment(), args.out)
        return
    if args.passes:
        rows = passes_rows(args.passes, environment() if args.device == "cuda" else host_environment(), args.device)
        if args.out:
            append_jsonl(args.out, rows)
        return
    if args.step_topk:
        rows = step_topk_rows(args.step_topk, environment())
        if args.out:
            append_jsonl(args.out, rows)
        return
    if args.fit:
        with open(args.fit) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for data in sorted({r.get("data", "randn") for r in records if r.get("path") == "single-block"}):
            print(fit_single_block(records, args.sms, data))
        return
    import torch
    env = environment()
    rows = []
    for what, r, n, k in (single_block_shapes() if args.single_block else SHAPES):
        sets = [rows_of(args.data, r, n) for _ in range(4)]
        row = {"what": what, "rows": r, "n": n, "k": k, "data": args.data,
               "path": "multi-block" if torch_topk_multiblock(r, n) else "single-block",
               "torch_sorted_us": timed(lambda x: x.topk(k, dim=-1), sets),
               "torch_unsorted_us": timed(lambda x: x.topk(k, dim=-1, sorted=False), sets)}
        rows.append({**env, **row})
        if args.out:
            append_jsonl(args.out, [rows[-1]])  # each shape as it ends: a cut-off run keeps its rows
        print(f"{what:18s} torch.topk {row['torch_sorted_us']:7.1f} us "
              f"(unsorted {row['torch_unsorted_us']:7.1f} us)", flush=True)


if __name__ == "__main__":
    main()
