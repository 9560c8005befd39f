"""One record schema for predictions and measurements, and whole-or-nothing file writes.

A record is a flat-ish JSON object: the configuration (hw, model, method, params, batch, seq,
gen, dtype, kv_dtype, gpus), the totals (flops, hbm_bytes, pcie_bytes, latency_s,
tokens_per_s, memory_bytes, kv_bytes, fits), ``attention`` (the same totals for attention over
the cache) and ``breakdown`` (per op). Measurements add ``source: "measured"`` and the device,
driver, versions, date and command; ``kvsim validate`` joins the two on the configuration.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from . import outfile
from .errors import KvsimError
from .roofline import graph_replay_time

CONFIG_KEYS = ("hw", "model", "method", "params", "batch", "seq", "gen", "dtype", "kv_dtype")
CSV_COLUMNS = CONFIG_KEYS + (
    "gpus", "offload", "latency_s", "latency_low_s", "latency_high_s", "tokens_per_s", "flops", "hbm_bytes",
    "pcie_bytes", "memory_bytes", "host_memory_bytes", "kv_bytes", "gpu_capacity_bytes", "fits",
    "beyond_trained_context", "attention_latency_s",
    "attention_hbm_bytes", "attention_flops", "ttft_s", "total_s", "gen_tokens_per_s")


def _scalar(value, index):
    array = np.asarray(value)
    item = array[index] if array.ndim else array
    item = item.item() if hasattr(item, "item") else item
    return item


def _index_shape(pred) -> tuple:
    return np.broadcast_shapes(np.shape(pred.workload.seq), np.shape(pred.workload.batch),
                               np.shape(pred.latency_s))


def prediction_records(pred, breakdown: bool = True) -> list[dict]:
    """One record per point of the prediction's (context × batch) grid."""
    shape = _index_shape(pred)
    return [_record(pred, index, breakdown) for index in np.ndindex(*shape)] if shape else [
        _record(pred, (), breakdown)]


def _at(value, index, shape):
    return _scalar(np.broadcast_to(np.asarray(value), shape), index) if shape else _scalar(value, ())


def _record(pred, index, breakdown) -> dict:
    shape = _index_shape(pred)
    at = lambda value: _at(value, index, shape)  # noqa: E731
    attn = pred.attention()
    record = {
        "source": "predicted", "hw": pred.hw.name, "model": pred.model.name,
        "method": pred.method.name, "params": pred.method.model_dump(exclude_none=True),
        "batch": int(at(pred.workload.batch)), "seq": int(at(pred.workload.seq)),
        "gen": pred.workload.gen, "dtype": pred.workload.dtype, "kv_dtype": pred.workload.kv_dtype,
        "gpus": pred.gpus, "offload": pred.offload,
        "latency_s": at(pred.latency_s), "latency_low_s": at(pred.latency_interval[0]),
        "latency_high_s": at(pred.latency_interval[1]), "interval_from": pred.interval_class,
        "tokens_per_s": at(pred.tokens_per_s),
        "flops": at(pred.flops), "hbm_bytes": at(pred.hbm_bytes), "pcie_bytes": at(pred.pcie_bytes),
        "memory_bytes": at(pred.memory_bytes), "host_memory_bytes": at(pred.host_memory_bytes),
        "kv_bytes": at(pred.kv_bytes), "gpu_capacity_bytes": pred.gpu_capacity_bytes,
        "fits": bool(at(pred.fits)),
        "trained_context": pred.model.max_context,
        "beyond_trained_context": bool(at(pred.workload.seq) > pred.model.max_context),
        "attention": {key: at(value) for key, value in attn.items()},
    }
    if pred.generation is not None:
        gen = pred.generation
        record["generation"] = {"ttft_s": at(gen.ttft_s), "decode_s": at(gen.decode_s),
                                "total_s": at(gen.total_s), "tokens_per_s": at(gen.tokens_per_s),
                                "peak_gpu_bytes": at(gen.peak_gpu_bytes)}
    if breakdown:
        record["breakdown"] = [
            {"name": t.op.name, "kind": t.op.kind, "flops": at(t.op.flops),
             "hbm_bytes": at(t.op.hbm_bytes), "pcie_bytes": at(t.op.pcie_bytes),
             "launches": at(t.op.launches), "time_s": at(t.time_s), "bound": str(at(t.bound_names()))}
            for t in pred.timing.ops]
        replay = graph_replay_time(pred.hw) if pred.engine == "graphs" else 0.0
        if replay > 0:  # one CUDA-graph replay's fixed cost (kvsim.roofline), beside the ops
            record["breakdown"].append({"name": "graph_replay", "kind": "launch", "flops": 0.0, "hbm_bytes": 0.0,
                                        "pcie_bytes": 0.0, "launches": 0.0, "time_s": replay, "bound": "latency"})
    return record


def flat_row(record: dict) -> dict:
    """The CSV columns of a record."""
    row = {key: record.get(key) for key in CSV_COLUMNS}
    row["params"] = json.dumps(record.get("params", {}), sort_keys=True)
    attention = record.get("attention", {})
    row.update(attention_latency_s=attention.get("latency_s"),
               attention_hbm_bytes=attention.get("hbm_bytes"), attention_flops=attention.get("flops"))
    generation = record.get("generation") or {}
    row.update(ttft_s=generation.get("ttft_s"), total_s=generation.get("total_s"),
               gen_tokens_per_s=generation.get("tokens_per_s"))
    return row


def to_csv(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(flat_row(record))
    return buffer.getvalue()


def write_whole(path: str | Path, text: str, option: str = "--out") -> None:
    """Write a file whole or not at all (kvsim.outfile)."""
    outfile.write_text(path, text, option)


def append_jsonl(path: str | Path, records: list[dict], option: str = "--out") -> None:
    """Append records as JSON lines; the file is replaced whole, so a crash leaves no half line."""
    outfile.append_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), option)


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; anything else is one line naming the file and line."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise KvsimError(f"records file {path} is not a regular file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise KvsimError(f"records file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise KvsimError(f"cannot read records file {path} ({exc.strerror})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise KvsimError(f"{path}:{number}: not a JSON record") from None
            if not isinstance(record, dict):
                raise KvsimError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def write_whole_bytes(path: str | Path, figure, option: str = "--plot") -> None:
    """Save a matplotlib figure whole or not at all (PNG unless the suffix says otherwise)."""
    outfile.write_figure(path, figure, option)


def _number(value, positive: bool) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > 0 if positive else value >= 0)


def _whole(value) -> bool:
    return _number(value, True) and float(value) == int(value)


# field -> (test, what it must be); None is allowed for every field but the configuration's
MEASURED_FIELDS = {
    "latency_s": (lambda v: _number(v, True), "a positive number of seconds"),
    "hbm_bytes": (lambda v: _number(v, False), "a number of bytes >= 0"),
    "memory_bytes": (lambda v: _number(v, True), "a positive number of bytes"),
    "eager": (lambda v: isinstance(v, dict) and all(x is None or _number(x, True) for x in v.values()),
              "an object of positive numbers of seconds"),
    "pcie_bytes": (lambda v: _number(v, False), "a number of bytes >= 0"),
    "n_layers": (_whole, "a positive whole number"),
    "offload": (lambda v: _number(v, False) and v <= 1, "a fraction in [0, 1]"),
    "params": (lambda v: isinstance(v, dict), "an object of method parameters"),
    "attention": (lambda v: isinstance(v, dict) and (v.get("latency_s") is None or _number(v["latency_s"], True)),
                  "an object whose latency_s is a positive number"),
    "timed_contexts": (lambda v: isinstance(v, dict) and all(_whole(x) for x in v.values()),
                       "an object of positive whole contexts"),
    "contexts": (lambda v: isinstance(v, list) and len(v) == 2 and all(_whole(x) for x in v) and v[0] <= v[1],
                 "[first, last] positive whole contexts"),
    "dtype": (lambda v: isinstance(v, str), "a dtype name"),
    "kv_dtype": (lambda v: isinstance(v, str), "a dtype name"),
    "fits": (lambda v: isinstance(v, bool), "true or false"),
}
REQUIRED_FIELDS = {"hw": (lambda v: isinstance(v, str) and bool(v), "a profile name"),
                   "model": (lambda v: isinstance(v, str) and bool(v), "a model name"),
                   "method": (lambda v: isinstance(v, str) and bool(v), "a method name"),
                   "seq": (_whole, "a positive whole number of tokens"),
                   "batch": (_whole, "a positive whole number")}


def check_measured(record: dict, where: str) -> None:
    """A measured record's fields are what validate and calibrate compute with: a NaN, negative
    or string latency is a broken file, named with its line and field, never counted."""
    for name, (test, what) in REQUIRED_FIELDS.items():
        if not test(record.get(name)):
            raise KvsimError(f"{where}: field '{name}' must be {what}, got {record.get(name)!r:.60}")
    for name, (test, what) in MEASURED_FIELDS.items():
        if record.get(name) is not None and not test(record[name]):
            raise KvsimError(f"{where}: field '{name}' must be {what}, got {record[name]!r:.60}")


def measured_records(paths, kind: str | None = None) -> list[dict]:
    """The measured records (``source: "measured"``) of JSON-lines files, each checked; those of
    ``kind`` (None: the per-step records, no ``kind``; "schedule": executed schedules)."""
    records = []
    for path in paths:
        for number, record in enumerate(read_jsonl(path), 1):
            if record.get("source") == "measured" and record.get("kind") == kind:
                check_measured(record, f"{path}: record {number}")
                records.append(record)
    return records
