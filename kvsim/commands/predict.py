"""kvsim predict: one decode step (and optionally a whole generation) for one configuration."""
from __future__ import annotations

import sys

import numpy as np

from .. import outfile
from ..methods import METHODS, names_with
from ..predict import predict
from ..quality import DEFAULT_BENCHMARK, parse_benchmark, quality
from ..records import prediction_records, to_csv
from ..report import comparison_text, prediction_text
from .common import (ANSWER, NO_FIT, add_engine_arg, add_format_arg, add_model_args, dump_json, fraction,
                     non_negative_int, parse_params, positive_int, tokens)


def register(sub) -> None:
    parser = sub.add_parser("predict", help="predict one decode step: FLOPs, bytes, memory, latency")
    parser.add_argument("--hw", required=True, help="hardware profile name, alias or YAML path")
    parser.add_argument("--method", default="dense", help="a method name, or 'all' to compare them")
    parser.add_argument("--seq", type=tokens, required=True, help="context length: 4096, 32k, 128k, 1M")
    parser.add_argument("--batch", type=positive_int, default=1, help="sequences decoded together: 8, 1k")
    parser.add_argument("--gen", type=non_negative_int, default=0, help="also predict generating N tokens after a --seq prompt: 512, 1k")
    parser.add_argument("--gpus", type=positive_int, default=1, help="tensor-parallel GPUs of this profile")
    parser.add_argument("--offload", type=fraction, default=0.0,
                        help="oldest fraction of the KV cache kept in host memory, fetched over PCIe "
                             f"({', '.join(names_with('offload'))})")
    add_model_args(parser)
    add_engine_arg(parser)
    add_format_arg(parser)
    parser.add_argument("--quality-benchmark", default=DEFAULT_BENCHMARK, type=parse_benchmark,
                        help=f"benchmark for the published-quality line (default {DEFAULT_BENCHMARK}; kvsim/methods/*/quality.yaml)")
    parser.add_argument("--plot", help="roofline, time breakdown, latency and memory against context, PNG")
    parser.set_defaults(run=run)


def _predict(args, method, params):
    return predict(args.hw, method=method, seq=args.seq, batch=args.batch, model=args.model,
                   gen=args.gen, dtype=args.dtype, kv_dtype=args.kv_dtype, gpus=args.gpus,
                   offload=args.offload, engine=args.engine, **params)


def run(args) -> int:
    if args.plot:
        outfile.check_plot(args.plot)
    params = parse_params(args.param)
    if args.method == "all":
        preds = [_predict(args, name, params if name == "dense" else {}) for name in METHODS]
        _plot(args, preds)
        return _emit_many(preds, args.format, args.quality_benchmark)
    pred = _predict(args, args.method, params)
    _plot(args, [pred])
    record = prediction_records(pred)[0]
    found = _quality(pred, args.quality_benchmark)
    if args.format == "json":
        print(dump_json({**record, "quality": found.as_dict()}))
    elif args.format == "csv":
        sys.stdout.write(to_csv([record]))
    else:
        print(prediction_text(pred, quality=found))
    message = pred.fit_message()
    if message:  # the prediction is the answer; the exit status says it does not fit
        print(message, file=sys.stderr)
        return NO_FIT
    return ANSWER


def _plot(args, preds) -> None:
    if args.plot:
        from ..plots import predict_figure
        predict_figure(preds, args.plot)


def _quality(pred, benchmark):
    """Published quality of this configuration (its effective parameters, the unsplit model)."""
    return quality(pred.method, pred.model, float(pred.workload.seq), benchmark)


def _emit_many(preds, fmt, benchmark) -> int:
    records = [prediction_records(p)[0] for p in preds]
    found = [_quality(p, benchmark) for p in preds]
    if fmt == "json":
        print(dump_json([{**r, "quality": q.as_dict()} for r, q in zip(records, found)]))
    elif fmt == "csv":
        sys.stdout.write(to_csv(records))
    else:
        print(comparison_text(preds, found))
    if not any(bool(p.fits) for p in preds):
        least = min(preds, key=lambda p: float(np.max(p.peak_gpu_bytes)))
        print(f"no method fits; the smallest, {least.method.name}: {least.fit_message()}", file=sys.stderr)
        return NO_FIT
    return ANSWER
