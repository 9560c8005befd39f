"""kvsim schedule: ALISA-style three-phase KV placement for one machine and workload, with the
FlexGen-style and vLLM-style baselines."""
from __future__ import annotations

from ..errors import KvsimError
from ..workload import WEIGHT_DTYPES
from .common import byte_size, dump_json, parse_params, positive_int, tokens


def _batch(text: str):
    return "auto" if text == "auto" else positive_int(text)


def _kv_bits(text: str) -> int:
    if text not in ("8", "16"):
        raise KvsimError(f"--kv-bits takes 8 or 16, got {text!r}")
    return int(text)


def register(sub) -> None:
    parser = sub.add_parser("schedule", help="three-phase GPU/CPU/recompute KV plan (ALISA) vs FlexGen and vLLM")
    parser.add_argument("--hw", required=True, help="GPU profile name, alias or YAML path")
    parser.add_argument("--model", required=True, help="model preset or YAML path")
    parser.add_argument("--layers", type=positive_int, help="the model's first N layers only (as the runtime cuts it)")
    parser.add_argument("--gpu-mem", type=byte_size, metavar="BYTES",
                        help="emulate a smaller GPU: plan for this much GPU memory (e.g. 12GiB), at most the device's")
    parser.add_argument("--method", default="alisa", help="a method name (dense: no sparsity)")
    parser.add_argument("--batch", type=_batch, default=16, help="sequences, or 'auto' to choose it")
    parser.add_argument("--max-batch", type=positive_int, default=256, help="largest batch --batch auto tries")
    parser.add_argument("--prompt", type=tokens, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--gen", type=tokens, default=512, help="generated tokens (default 512)")
    parser.add_argument("--kv-bits", type=_kv_bits, default=16, help="16, or 8 for INT8 KV (ALISA §5)")
    parser.add_argument("--dtype", choices=WEIGHT_DTYPES, help="weights and activations (default: the GPU's 16-bit type)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the FlexGen and vLLM baselines")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--plot", metavar="FILE.png", help="write KV bytes and step time over the generation")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..outfile import check_plot
    from ..schedule import schedule
    from ..models import first_layers
    from ..schedule.executed import with_gpu_memory
    from ..schedule.report import text, to_dict

    if args.plot:
        check_plot(args.plot)
    result = schedule(with_gpu_memory(args.hw, args.gpu_mem), first_layers(args.model, args.layers), method=args.method, batch=args.batch, prompt=args.prompt,
                      gen=args.gen, kv_bits=args.kv_bits, dtype=args.dtype,
                      params=parse_params(args.param), baselines=not args.no_baselines,
                      max_batch=args.max_batch)
    if args.plot:
        from ..schedule.plot import write_plot
        write_plot(result, args.plot)
    print(dump_json(to_dict(result)) if args.format == "json" else text(result))
    return 0
