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
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import KvsimError

CONFIG_KEYS = ("hw", "model", "method", "params", "batch", "seq", "gen", "dtype", "kv_dtype")
CSV_COLUMNS = CONFIG_KEYS + (
    "gpus", "offload", "latency_s", "latency_low_s", "latency_high_s", "tokens_per_s", "flops", "hbm_bytes", "pcie_bytes", "memory_bytes",
    "host_memory_bytes", "kv_bytes", "gpu_capacity_bytes", "fits", "attention_latency_s",
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


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes it owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_whole(path: str | Path, text: str) -> None:
    """Write a file whole or not at all: a temporary file beside it, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(temp, _umask_mode())
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append records as JSON lines with one write, so a crash leaves no half-written line."""
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict]:
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        raise KvsimError(f"cannot read records file {path}") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise KvsimError(f"{path}:{number}: not a JSON record") from None
    return records


def write_whole_bytes(path: str | Path, figure) -> None:
    """Save a matplotlib figure whole or not at all (PNG unless the suffix says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".png")
    os.close(handle)
    os.chmod(temp, _umask_mode())
    try:
        figure.savefig(temp, dpi=120)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
