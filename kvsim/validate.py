"""Join measurements with predictions: kvsim's own prediction error.

A measured record (``source: "measured"``, written by ``kvsim measure``) names its hardware
profile (``hw``), model, ``n_layers`` (the runtime may cut layers), method, params, batch, seq
and dtypes (and ``gpus``, tensor-parallel GPUs: bytes and memory per GPU); it is predicted with
exactly that configuration and the relative errors
(predicted − measured) / measured of step latency, attention latency, HBM bytes (when Nsight
Compute counted them), PCIe bytes and memory (kvsim's allocations, ``memory_bytes`` less the
workspace, against the runtime's peak ``torch.cuda.max_memory_allocated``) are summarised per
group (method, and on request model, device and trust class) and overall, with the share of
step latencies inside the predicted 90% interval (kvsim.intervals).
With ``engine`` "eager" the step and attention latencies are the runtime's eager timings
(``record["eager"]``, every op issued from the host) against kvsim's eager engine; a record
whose step could not be captured (``timer`` says eager, e.g. offloaded steps) is always compared
that way: its only timings are eager ones. A record that carries the host clock its eager
timings ran at (``eager.host_probe_s``) is predicted with the host costs at that clock.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import KvsimError
from .hardware import HardwareProfile
from .profiles import load_profile
from .intervals import interval
from .models import first_layers
from .predict import predict
from .eager_timing import as_timed
from .host_costs import at_host_probe

QUANTITIES = ("latency", "attention_latency", "hbm_bytes", "pcie_bytes", "memory_bytes")
GROUP_KEYS = ("method", "model", "device", "trust")
PCIE_FLOOR_BYTES = 1e6  # below this both sides are "no PCIe traffic"


@dataclass(frozen=True)
class Comparison:
    record: dict
    predicted: dict  # quantity -> value, and latency_low / latency_high: the 90% interval
    measured: dict  # quantity -> value or None
    trust: str = "measured"  # the profile's trust class (kvsim.intervals)

    @property
    def inside(self) -> bool:
        return self.predicted["latency_low"] <= self.measured["latency"] <= self.predicted["latency_high"]

    def error(self, quantity: str):
        meas, pred = self.measured.get(quantity), self.predicted.get(quantity)
        if meas is None or pred is None:
            return None
        if quantity == "pcie_bytes" and max(meas, pred) < PCIE_FLOOR_BYTES:
            return 0.0
        return relative_error(pred, meas)


def relative_error(pred, meas):
    """(predicted − measured) / measured; None where either is missing or nothing was measured."""
    return None if pred is None or meas is None or meas <= 0 else (pred - meas) / meas


def measured_values(record: dict, engine: str = "graphs") -> dict:
    attention = record.get("attention") or {}
    latency, attention_latency = record.get("latency_s"), attention.get("latency_s")
    if engine == "eager":
        eager = record.get("eager") or {}
        latency, attention_latency = eager.get("latency_s"), eager.get("attention_latency_s")
    return {"latency": latency, "attention_latency": attention_latency,
            "hbm_bytes": record.get("hbm_bytes"), "pcie_bytes": record.get("pcie_bytes"),
            "memory_bytes": record.get("memory_bytes") if record.get("memory_how") == ALLOCATED else None}


ALLOCATED = "torch.cuda.max_memory_allocated"


def in_targets(record: dict) -> bool:
    """Rows the latency targets cover: not offloaded, CUDA-graph timed, not ALISA's INT8 path
    (each has an issue of its own)."""
    params = record.get("params") or {}
    int8 = record.get("method") == "alisa" and int(params.get("kv_bits", 16)) == 8
    return not (record.get("offload") or "eager" in str(record.get("timer", "")) or int8)


def model_for(record: dict):
    return first_layers(record["model"], record.get("n_layers") or None)


def record_profile(name: str) -> HardwareProfile:
    """The profile a record's device is predicted on: the shipped one (measured fields where that
    device was measured, laws transferred from a measured device elsewhere)."""
    return load_profile(name)


def gpus_of(record: dict) -> int:
    """Tensor-parallel GPUs of a record (1 when it does not say)."""
    return record.get("gpus") or 1


def group(record: dict, by=("method",), trust: str = "") -> str:
    """The row a record's errors go to: its method, offloaded runs and runs on several
    tensor-parallel GPUs apart (``sparq offload 0.5``, ``dense x2``), then the model, device
    (``hw``) and trust class where ``by`` names them."""
    offload, gpus = record.get("offload") or 0.0, gpus_of(record)
    method = record["method"] + (f" x{gpus}" if gpus != 1 else "") + (f" offload {offload:g}" if offload else "")
    parts = {"method": method, "model": str(record.get("model")), "device": str(record.get("hw")), "trust": trust}
    return " | ".join(parts[key] for key in by)


def predict_record(record: dict, hw: HardwareProfile | str | None = None, seq=None, engine: str = "graphs"):
    """The prediction of a measured configuration, at ``seq`` (default the record's), on ``hw``
    or else on :func:`record_profile` of the record's device, run on ``engine``."""
    try:
        profile = load_profile(hw) if hw else record_profile(record["hw"])
        return predict(profile, method=record["method"], seq=record["seq"] if seq is None else seq,
                       batch=record["batch"],
                       model=model_for(record), dtype=record.get("dtype"),
                       kv_dtype=record.get("kv_dtype"), offload=record.get("offload") or 0.0, gpus=gpus_of(record),
                       engine=engine,
                       **(record.get("params") or {}))
    except KeyError as exc:
        raise KvsimError(f"measured record lacks the field {exc.args[0]!r}") from None


def step_context(record: dict) -> int:
    """The context whose step latency a record reports: the replayed step's for CUDA-graph
    timings (``timed_contexts``), else ``seq`` (the median eager step's)."""
    return (record.get("timed_contexts") or {}).get("step", record["seq"])


def eager_timed(record: dict) -> bool:
    """The record's only timings are eager ones (its step could not be captured in a graph)."""
    return "eager" in str(record.get("timer", ""))


def _has_eager(record: dict, hw) -> bool:
    """Whether the profile the record is predicted on has the eager engine's host costs."""
    profile = load_profile(hw) if hw else record_profile(record["hw"])
    return profile.host is not None and profile.host.launch_s is not None and profile.host.sync_s is not None


def on_record_host(record: dict, hw=None) -> HardwareProfile:
    """The profile ``record`` is predicted on, its host costs at the host clock the record's
    eager timings ran at (``eager.host_probe_s``, kvsim.host_costs.at_host_probe) where it has one."""
    profile = load_profile(hw) if hw else record_profile(record["hw"])
    return at_host_probe(profile, (record.get("eager") or {}).get("host_probe_s"))


def predicted_values(record: dict, hw=None, engine: str = "graphs") -> dict:
    """Each quantity predicted where the measurement took it, in one vectorized prediction:
    latencies at the replayed step's and attention call's contexts (``timed_contexts``), or the
    median over the eager steps' contexts (``contexts``: first, last) for eager timings; PCIe
    bytes the mean over the eager steps; HBM bytes at ``seq`` (Nsight Compute counts one step
    there). Eager timings (``engine`` "eager", or a record timed only eagerly) are always the
    eager steps', predicted on the eager engine (host issue time included) where the profile
    has its host costs, as the harness times them (kvsim.eager_timing)."""
    seq = record["seq"]
    replayed = record.get("timed_contexts") or {}
    first, last = record.get("contexts") or (seq, seq)
    seqs = np.r_[seq, step_context(record), replayed.get("attention", seq), np.arange(first, last + 1)]
    eager = engine == "eager" or eager_timed(record)
    if eager and _has_eager(record, hw):
        hw, engine = on_record_host(record, hw), "eager"
    pred = predict_record(record, hw, seq=seqs, engine=engine)
    every = lambda x: np.broadcast_to(np.asarray(x, dtype=float), seqs.shape)  # noqa: E731
    if engine == "eager":  # as the harness times eager calls (kvsim.eager_timing)
        latency, attention = map(every, as_timed(pred, record))
    else:
        latency, attention = every(pred.latency_s), every(pred.attention()["latency_s"])
    step = float(np.median(latency[3:]) if eager else latency[1])
    low, high = interval(step, pred.hw.trust_class, pred.hw.name)
    return {"latency": step, "latency_low": float(low), "latency_high": float(high),
            "attention_latency": float(np.median(attention[3:]) if eager else attention[2]),
            "hbm_bytes": float(every(pred.hbm_bytes)[0]),
            "pcie_bytes": float(np.mean(every(pred.pcie_bytes)[3:])),
            "memory_bytes": float(np.max(every(pred.memory_bytes))) - pred.hw.workspace_bytes.value}


def _profile_getter(hw, transfer_from):
    """record -> the profile it is predicted on: ``hw``; its device's with every law from
    ``transfer_from`` (leave-one-device-out); or its device's shipped profile."""
    if hw:
        fixed = load_profile(hw)
        return lambda record: fixed
    if transfer_from:
        from .profiles import left_out
        return lambda record: left_out(record["hw"], transfer_from)
    return lambda record: record_profile(record["hw"])


def compare(records: list[dict], hw=None, skipped: list | None = None, transfer_from: str | None = None,
            engine: str = "graphs") -> list[Comparison]:
    """Comparisons for the measured records that ran (``fits`` not false; with ``engine``
    "eager", those with eager timings); a record kvsim cannot predict (e.g. a method whose
    layer schedule needs more layers than the cut model has) goes to ``skipped`` with the
    reason."""
    rows, profile_of = [], _profile_getter(hw, transfer_from)
    for record in records:
        if record.get("source") != "measured" or record.get("fits") is False or not record.get("latency_s"):
            continue
        if engine == "eager" and not measured_values(record, engine)["latency"]:
            continue
        try:
            profile = profile_of(record)
            predicted = predicted_values(record, profile, engine)
        except KvsimError as exc:
            if skipped is None:
                raise
            skipped.append((record, str(exc)))
            continue
        rows.append(Comparison(record, predicted, measured_values(record, engine), profile.trust_class))
    if not rows and skipped:
        record, why = skipped[0]
        raise KvsimError(f"none of the {len(skipped)} measured records could be predicted; the first "
                         f"({record.get('method')} S={record.get('seq')} B={record.get('batch')}): {why}")
    if not rows:
        raise KvsimError("no measured record that ran (latency_s set, fits not false) in the given files")
    return rows


def _stats(rows: list[Comparison], quantity: str) -> dict:
    errors = [(abs(e), e, r) for r in rows if (e := r.error(quantity)) is not None]
    if not errors:
        return {"n": 0, "median_abs_err": None, "p90_abs_err": None, "worst": None}
    magnitudes = np.array([m for m, _, _ in errors])
    _, signed, row = max(errors, key=lambda item: item[0])
    rec = row.record
    worst = {"err": signed, "method": rec["method"], "seq": rec["seq"], "batch": rec["batch"],
             "model": rec["model"], "predicted": row.predicted[quantity], "measured": row.measured[quantity]}
    return {"n": len(errors), "median_abs_err": float(np.median(magnitudes)),
            "p90_abs_err": float(np.percentile(magnitudes, 90)), "worst": worst}


def _block(subset: list[Comparison]) -> dict:
    coverage = float(np.mean([r.inside for r in subset])) if subset else None
    return {"n": len(subset), "interval_coverage": coverage, **{q: _stats(subset, q) for q in QUANTITIES}}


def summarize(rows: list[Comparison], by=("method",)) -> dict:
    """{"overall": {...}, "methods": {name: {...}}, "groups": {key: {...}}}, each with n, the
    share of latencies inside the 90% interval and per-quantity statistics (offloaded runs of a
    method are a row of their own: their latency is a different question); "groups" by ``by``
    (of GROUP_KEYS), "targets" over the rows the latency targets cover (:func:`in_targets`)."""
    keyed = lambda keys: {r_key: [r for r in rows if group(r.record, keys, r.trust) == r_key]  # noqa: E731
                          for r_key in sorted({group(r.record, keys, r.trust) for r in rows})}
    return {"overall": _block(rows),
            "targets": _block([r for r in rows if in_targets(r.record)]),
            "methods": {k: _block(v) for k, v in keyed(("method",)).items()},
            "groups": {k: _block(v) for k, v in keyed(tuple(by)).items()}}


def plot(rows: list[Comparison], path: str) -> None:
    """Predicted against measured step latency on log axes: one colour per method, its offloaded
    runs (KV partly in host memory, a different question) as hollow markers of their own."""
    import matplotlib

    from .plots import _pyplot
    from .records import write_whole_bytes

    plt = _pyplot()  # Agg, unless pyplot is already in use (a notebook keeps its own)

    fig, ax = plt.subplots(figsize=(8.4, 5.6))
    methods = sorted({r.record["method"] for r in rows})
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for name in sorted({group(r.record) for r in rows}):
        picked = [r for r in rows if group(r.record) == name]
        color = cycle[methods.index(picked[0].record["method"]) % len(cycle)]
        offloaded = name != picked[0].record["method"]
        ax.scatter([r.measured["latency"] * 1e3 for r in picked], [r.predicted["latency"] * 1e3 for r in picked],
                   label=name, s=30 if offloaded else 22, marker="D" if offloaded else "o",
                   facecolors="none" if offloaded else color, edgecolors=color)
    values = [v * 1e3 for r in rows for v in (r.measured["latency"], r.predicted["latency"])]
    low, high = min(values) / 1.5, max(values) * 1.5
    ax.plot([low, high], [low, high], color="grey", lw=1, label="exact")
    ax.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="grey",
                    alpha=0.15, label="±10%")
    devices = ", ".join(sorted({str(r.record.get("hw", "")) for r in rows}))
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high),
           xlabel="measured step latency (ms)", ylabel="predicted step latency (ms)",
           title=f"kvsim prediction vs measurement ({devices})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="hollow: KV partly offloaded", title_fontsize=7)
    fig.tight_layout()
    write_whole_bytes(path, fig)
    plt.close(fig)
