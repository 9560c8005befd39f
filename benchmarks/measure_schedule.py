"""Execute kvsim's three-phase schedule (ALISA) and the FlexGen-style policy on an emulated GPU.

    python3 benchmarks/measure_schedule.py --hw h100 --model opt-6.7b --layers 4 --batch 32 \
        --prompt 128 --gen 512 --gpu-mem 5.4GiB --out $OUT/sched/h100-schedule.jsonl

kvsim schedule plans for ``--gpu-mem`` bytes of GPU memory (``kvsim schedule ... --gpu-mem``,
the same plan); the runtime (runtime/schedule_exec.py) runs the whole generation under it:
prefill, then every decode step, each timed with CUDA events (eager). One record per policy
(``kind: schedule``) is appended to --out; ``kvsim validate FILE`` compares it with the
prediction. A policy whose plan streams weights is skipped with one line (not executed).
Each policy runs once unmeasured first (Triton compiles kernels per shape), then measured.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.commands.common import byte_size, parse_params, positive_int, tokens  # noqa: E402
from kvsim.errors import KvsimError  # noqa: E402
from kvsim.records import append_jsonl  # noqa: E402

WARM_STEPS = 48  # FlexGen's warm-up: every n mod 16 the dense kernels specialise on, and more


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", required=True, help="the device's profile (the prediction's hardware)")
    ap.add_argument("--model", default="opt-6.7b")
    ap.add_argument("--layers", type=positive_int, help="the model's first N layers")
    ap.add_argument("--batch", type=positive_int, default=32)
    ap.add_argument("--prompt", type=tokens, default=128)
    ap.add_argument("--gen", type=tokens, default=512)
    ap.add_argument("--gpu-mem", type=byte_size, required=True, help="the emulated GPU's memory (e.g. 5.4GiB)")
    ap.add_argument("--param", action="append", metavar="NAME=VALUE", help="ALISA parameter (repeatable)")
    ap.add_argument("--policies", default="alisa,flexgen")
    ap.add_argument("--device", help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", help="bf16 (CUDA default) or fp32 (CPU default)")
    ap.add_argument("--no-warmup", action="store_true", help="measure the first run (CPU tests)")
    ap.add_argument("--out", required=True)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    try:
        from kvsim.commands.measure import _driver
        from kvsim.outfile import check
        from kvsim.schedule.executed import prediction

        check(args.out, "--out")
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        if not policies or any(p not in ("alisa", "flexgen") for p in policies):
            raise KvsimError(f"--policies takes alisa and/or flexgen, got {args.policies!r}")
        pred = prediction(args.hw, args.model, args.layers, args.batch, args.prompt, args.gen, args.gpu_mem,
                          parse_params(args.param))
    except KvsimError as exc:
        print(exc, file=sys.stderr)
        return 2
    import torch
    from kvsim.runtime.model import Decoder, torch_dtype
    from kvsim.runtime.schedule_exec import ScheduleUnsupported, generate
    from kvsim.runtime.schedule_record import record

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch_dtype(args.dtype or ("bf16" if device.type == "cuda" else "fp32"))
    decoder = Decoder(args.model, pred["n_layers"], device, dtype, 0, max_positions=args.prompt + args.gen)
    driver = _driver()
    for policy in policies:
        try:
            if not args.no_warmup:
                generate(policy, pred, device, dtype, decoder=decoder,
                         max_steps=None if policy == "alisa" else WARM_STEPS)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            run = generate(policy, pred, device, dtype, decoder=decoder)
        except ScheduleUnsupported as exc:
            print(f"skipped {exc}", flush=True)
            continue
        rec = record(policy, pred, run, args.gpu_mem, device)
        rec.update(model=args.model, driver=driver, command="python3 " + " ".join(sys.argv))
        append_jsonl(args.out, [rec])
        del run
        print(f"{policy:>8} B={args.batch} P={args.prompt} G={args.gen} budget {args.gpu_mem / 2**30:.2f} GiB: "
              f"total {rec['total_s']:.3f} s (kvsim, eager {pred[policy]['total_s']:.3f} s), peak "
              f"{rec['peak_memory_bytes'] / 2**30:.2f} GiB (prefill {rec['prefill_peak_bytes'] / 2**30:.2f} GiB in passes of "
              f"{rec['prefill_sequences']}), PCIe {rec['pcie_bytes'] / 1e9:.2f} GB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
