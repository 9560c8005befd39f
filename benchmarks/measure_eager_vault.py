"""A held-out set for the eager engine that nobody opens until the model is final: every method
at configurations off the sweep grid (contexts 12k/40k, batches 3/5, llama-3.1-8b and llama-2-7b
cut to 4 or 6 layers), eager timings only (no graph capture: more configurations in the time),
each record with the host clock of its eager timings (``eager.host_probe_s``). No configuration
runs torch.profiler (no ``gpu_busy_s``): the first vault (h100-eager-vault.jsonl, contexts 8k/24k,
batches 2/6) ran it per configuration, and its hooks slowed every later one's host calls. On a
CUDA GPU:

    python3 benchmarks/measure_eager_vault.py --out $OUT/eager/h100-eager-vault.jsonl --budget-s 50

Each method gets CONFIGS_PER_METHOD of the 16 (model, context, batch, layers) choices, spread so
the methods together cover all of them; the grid runs round by round (every method's first
configuration, then every method's second), so a budget cut still leaves every method measured.
"""
import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kvsim.methods import METHODS  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402
from kvsim.runtime.sweep_process import cut_model_params  # noqa: E402

CHOICES = list(itertools.product(("llama-3.1-8b", "llama-2-7b"), (12288, 40960), (3, 5), (4, 6)))
CONFIGS_PER_METHOD = 2


def grid(methods):
    for round_ in range(CONFIGS_PER_METHOD):
        for i, method in enumerate(methods):
            model, seq, batch, layers = CHOICES[(i + round_ * (len(CHOICES) // 2 + 1)) % len(CHOICES)]
            yield {"method": method, "model": model, "seq": seq, "batch": batch, "n_layers": layers,
                   "params": cut_model_params(method, layers)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=50)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--methods", default="all")
    args = ap.parse_args()
    import torch
    from kvsim.commands.measure import _driver, profile_for
    from kvsim.runtime.measure import measure
    hw, start, driver = profile_for(torch.cuda.get_device_name()), time.time(), _driver()
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    for config in grid(methods):
        if time.time() - start > args.budget_s:
            print("time budget reached", flush=True)
            return
        # eager timings only, and no torch.profiler: its hooks would slow every later configuration
        record = measure(**config, steps=args.steps, warmup=5, hw=hw, graphs=False, busy_time=False)
        record.update(command="python3 " + " ".join(sys.argv), driver=driver)
        append_jsonl(args.out, [record])
        torch.cuda.empty_cache()
        print(f"vault: {config['method']} measured", flush=True)  # no numbers: nobody looks yet


if __name__ == "__main__":
    main()
