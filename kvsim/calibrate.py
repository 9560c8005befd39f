"""Fit a profile's memory-efficiency curve and launch floor to measured step latencies and
attention-only latencies (each record's two CUDA-graph replays: the whole step, and its
attention ops alone, where the small kernels around a method's selection weigh more).

Least squares on log(predicted / measured) (scipy.optimize.least_squares) over the efficiency
at the curve's knots and the launch overhead. The costs do not depend on the efficiencies, so
each configuration's Cost is built once and only the roofline is re-evaluated per iteration.
A stable hash of each configuration holds out a fraction of them; the fitted profile records
which file, which configurations were held out, and the date.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np

from .errors import KvsimError
from .hardware import HardwareProfile
from .profiles import left_out, load_profile
from .roofline import step_time
from .validate import predict_record, step_context

KNOTS = (1e5, 1e6, 1e7, 1e8, 1e9, 1e10)  # bytes moved by one kernel


def config_key(record: dict) -> str:
    fields = {k: record.get(k) for k in ("model", "n_layers", "method", "params", "batch", "seq", "dtype", "kv_dtype")}
    return json.dumps(fields, sort_keys=True)


def is_held_out(record: dict, fraction: float) -> bool:
    digest = hashlib.sha256(config_key(record).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _costs(records: list[dict], hw: HardwareProfile) -> list:
    """Each record's step Cost at the context it timed (built once: the fit only re-times it)."""
    return [predict_record(rec, hw, seq=step_context(rec)).cost for rec in records]


def _attention_costs(records: list[dict], hw: HardwareProfile) -> list:
    """Each record's attention ops (``Cost.attention``) at the context its attention-only replay
    timed."""
    return [predict_record(rec, hw, seq=(rec.get("timed_contexts") or {}).get("attention", rec["seq"])).cost.attention()
            for rec in records]


def _attention_measured(record: dict):
    return (record.get("attention") or {}).get("latency_s")


def _attention_time(attention_cost, hw: HardwareProfile) -> float:
    """The attention-only replay as kvsim.predict times it: its ops and one replay's fixed cost
    (graphs: the compute stream's ops back to back; calibration leaves offloaded records out)."""
    return float(step_time(attention_cost, hw).latency_s)


def fitted_fields(effs, launch_s: float, note: str) -> dict:
    """The measured fields a calibration writes: the memory curve and the launch floor."""
    return {"memory.efficiency": {"points": [[k, float(e)] for k, e in zip(KNOTS, effs)],
                                  "source": f"measured {note}"},
            "launch_overhead_s": {"value": float(launch_s), "source": f"measured {note}"}}


def with_fields(data: dict, fields: dict) -> dict:
    out = json.loads(json.dumps(data))
    for path, value in fields.items():
        *parents, last = path.split(".")
        holder = out
        for key in parents:
            holder = holder.setdefault(key, {})
        holder[last] = value
    return out


def with_fit(hw: HardwareProfile, effs, launch_s: float, note: str) -> HardwareProfile:
    return HardwareProfile.model_validate(with_fields(hw.model_dump(), fitted_fields(effs, launch_s, note)))


def physical(params) -> np.ndarray:
    """Knot efficiencies that keep a kernel's time non-decreasing in the bytes it moves: the
    efficiency never falls with size (bigger kernels are never slower per byte), and between
    knots a and b (interpolated in log size) it grows at most (1 + ln(b/a))-fold, where
    bytes / efficiency would start to fall."""
    effs = np.maximum.accumulate(np.clip(np.asarray(params, dtype=float), 1e-3, 1.0))
    for i in range(1, len(effs)):
        effs[i] = min(effs[i], effs[i - 1] * (1.0 + np.log(KNOTS[i] / KNOTS[i - 1])))
    return effs


def _residuals(params, hw, costs, measured, attention=((), ())):
    """log(predicted / measured) of each step latency, then of each attention-only latency."""
    effs = physical(params[:-1])
    trial = with_fit(hw, effs, params[-1] * 1e-6, "trial")
    predicted = np.array([float(step_time(c, trial).latency_s) for c in costs])
    att_costs, att_measured = attention
    att = np.array([_attention_time(c, trial) for c in att_costs])
    return np.r_[np.log(predicted / measured), np.log(att / np.asarray(att_measured, dtype=float))]


def fit(records: list[dict], hw: str | HardwareProfile, source_files: list[str], holdout: float = 0.3):
    """-> (the measured fields to write into the profile, training records, held-out records)."""
    from scipy.optimize import least_squares

    from .validate import in_targets
    hw = load_profile(hw)
    measured = [r for r in records if r.get("source") == "measured" and r.get("latency_s")
                and r.get("fits") is not False and in_targets(r)]
    train = [r for r in measured if not is_held_out(r, holdout)]
    held = [r for r in measured if is_held_out(r, holdout)]
    if len(train) < len(KNOTS) + 1:
        raise KvsimError(f"calibration needs at least {len(KNOTS) + 1} measured configurations, got {len(train)}")
    costs = _costs(train, hw)
    with_attention = [r for r in train if _attention_measured(r)]
    attention = (_attention_costs(with_attention, hw), [_attention_measured(r) for r in with_attention])
    start = np.r_[hw.memory.efficiency.at(np.array(KNOTS)), hw.launch_overhead_s.value * 1e6]
    lower, upper = np.r_[[1e-3] * len(KNOTS), 0.5], np.r_[[1.0] * len(KNOTS), 50.0]
    result = least_squares(_residuals, np.clip(start, lower, upper), bounds=(lower, upper),
                           args=(hw, costs, np.array([r["latency_s"] for r in train]), attention), x_scale="jac")
    effs = physical(result.x[:-1])
    note = (f"{datetime.date.today().isoformat()} (fit): kvsim calibrate {' '.join(source_files)} --hw {hw.name}; "
            f"least squares in log space over {len(train)} configurations' step and attention-only "
            f"latencies, {len(held)} held out")
    fields = fitted_fields(effs, result.x[-1] * 1e-6, note)
    fields["calibration"] = {"measurements": list(source_files), "date": datetime.date.today().isoformat(),
                           "method": "scipy.optimize.least_squares on log(predicted/measured) of step latency and "
                                     "attention-only latency (each configuration's two graph replays); "
                                     "memory efficiency at knots " + ", ".join(f"{k:.0e}" for k in KNOTS)
                                     + " bytes per kernel, and the launch overhead",
                           "held_out": f"{len(held)} of {len(measured)} configurations, chosen by "
                                       f"sha256(configuration) < {holdout} (kvsim.calibrate.is_held_out)",
                           "methods": sorted({r["method"] for r in train}), "holdout": holdout}
    return fields, train, held


INTERVAL_SPLIT = 0.3  # records with sha256 < this are kept for coverage; the rest give the quantiles


def _trained_on(record: dict, hw: HardwareProfile, path: str) -> bool:
    """Whether the device's own calibration fitted this record (it predicts it too well): a
    record of a file the calibration read, of a method it fitted, outside its hold-out."""
    cal = hw.calibration
    if cal is None or record.get("method") not in (cal.methods or [record.get("method")]):
        return False
    if Path(path).name not in {Path(m).name for m in cal.measurements or []}:
        return False
    return not is_held_out(record, cal.holdout if cal.holdout is not None else 0.3)


def _log_ratios(tagged: list[tuple[str, dict]], profile_of) -> list[float]:
    out = []
    for path, record in tagged:
        try:
            hw = profile_of(record)
            predicted = predict_record(record, hw, seq=step_context(record)).latency_s
        except KvsimError:
            continue
        if hw is not None and not _trained_on(record, hw, path):
            out.append(float(np.log(record["latency_s"] / float(np.max(predicted)))))
    return out


MIN_DEVICE_RECORDS = 20  # fewer cannot place a 5% quantile between two of its records


def machine_offsets(pairs: dict[str, tuple[list[dict], list[dict]]]) -> dict[str, float]:
    """For each "REPEAT=ORIGINAL" name: the median over their common configurations of
    log(step latency on the repeat's machine / on the original's), one machine of a device
    against another (the same configurations, runtime and software)."""
    key = lambda r: (config_key(r), r.get("offload", 0.0))  # noqa: E731
    out = {}
    for name, (repeat, original) in pairs.items():
        first = {key(r): r["latency_s"] for r in original if r.get("latency_s")}
        ratios = [np.log(r["latency_s"] / first[key(r)]) for r in repeat if r.get("latency_s") and key(r) in first]
        if len(ratios) < 5:
            raise KvsimError(f"{name}: {len(ratios)} configurations measured on both machines; need at least 5")
        out[name] = float(np.median(ratios))
    return out


def with_machines(values, offsets) -> np.ndarray:
    """Residuals as another machine of the device would give them: each residual moved by every
    measured machine-to-machine offset, either way (which machine is the faster one is not
    known for a user's), or the residuals alone where no offset was measured."""
    values = np.asarray(values, dtype=float)
    shifts = np.array([s * d for d in offsets for s in (1.0, -1.0)])
    return values if shifts.size == 0 else (values[:, None] + shifts[None, :]).ravel()


def interval_classes(records_by_file: dict[str, list[dict]], machines: dict[str, float] | None = None) -> dict:
    """Residual quantiles per trust class from the records that do not hold coverage back
    (sha256(configuration) >= INTERVAL_SPLIT, of every file given: the main sweep and the
    extended grid; the device's calibration's own training records left out).
    "measured": each record on its own device's shipped profile, quantiles per device (a
    measured device's interval is its own residuals' spread) and pooled (for a device measured
    later without residuals of its own); "same-architecture": pooled over every ordered pair of
    measured devices of one architecture, the first predicted with every law from the second
    (the class serves devices with no measurement, so no device of its own). ``machines``
    (``machine_offsets``): every class's residuals are spread by them (``with_machines``): a
    user's GPU is another machine than the one measured."""
    from .validate import in_targets, record_profile

    fit = [(path, r) for path, recs in records_by_file.items() for r in recs
           if r.get("source") == "measured" and r.get("latency_s") and r.get("fits") is not False
           and in_targets(r) and not is_held_out(r, INTERVAL_SPLIT)]
    devices = sorted({r["hw"] for _, r in fit if record_profile(r["hw"]).trust_class == "measured"})
    of = lambda d: [(p, r) for p, r in fit if r["hw"] == d]  # noqa: E731
    files = ", ".join(records_by_file)
    offsets = list((machines or {}).values())
    spread = lambda values: {**_quantiles(with_machines(values, offsets)), "n": len(values)}  # noqa: E731
    classes = {}
    own = {d: _log_ratios(of(d), lambda r: record_profile(r["hw"])) for d in devices}
    pooled = [x for v in own.values() for x in v]
    if len(pooled) >= 5:
        classes["measured"] = {**spread(pooled), "devices": {d: spread(v) for d, v in own.items()
                                                             if len(v) >= MIN_DEVICE_RECORDS},
                               "records": f"{files}: {', '.join(devices)}, each on its shipped profile, its "
                                          "calibration's training records left out", "fit": _split_note()}
    arch = lambda d: record_profile(d).architecture  # noqa: E731
    pairs = [(d, s) for d in devices for s in devices if s != d and arch(s) and arch(s) == arch(d)]
    moved = [x for d, s in pairs for x in _log_ratios(of(d), lambda r, s=s: left_out(r["hw"], s))]
    if len(moved) >= 5:
        classes["same-architecture"] = {**spread(moved), "records": f"{files}: "
                                        + "; ".join(f"{d} predicted from {s}'s laws alone" for d, s in pairs),
                                        "fit": _split_note()}
    if classes and machines:
        note = {"offsets": {name: round(d, 5) for name, d in machines.items()},
                "how": "each residual moved by every offset, either way: the quantiles are of those sums"}
        classes = {name: {**c, "machines": note} for name, c in classes.items()}
    if classes:
        classes["other-architecture"] = _unmeasured(classes)
    return classes


def _unmeasured(classes: dict) -> dict:
    """No device of another architecture has been measured: its interval is the widest measured
    class's, stated as a lower bound, not as a measured 90%."""
    widest = max(classes, key=lambda c: classes[c]["q_high"] - classes[c]["q_low"])
    return {"q_low": classes[widest]["q_low"], "q_high": classes[widest]["q_high"], "n": 0, "from": widest,
            "records": "none: no device of another architecture has been measured",
            "fit": f"the widest measured class's quantiles ({widest}), a lower bound: laws carried across an "
                   "architecture through its datasheet facts have never been checked against a measurement"}


def _quantiles(values) -> dict:
    from .intervals import fit_quantiles
    return fit_quantiles(values)


def _split_note() -> str:
    return (f"records with sha256(configuration) >= {INTERVAL_SPLIT} (kvsim.calibrate.is_held_out); the others "
            f"measure coverage: kvsim validate --held-out {INTERVAL_SPLIT}")


def patch_profile_text(text: str, fields: dict) -> str:
    """A profile file's text with ``fields`` (dotted path -> value, at most two levels) written
    in place, one flow-style line each, so its other lines and comments stay as they are."""
    import yaml

    lines = text.splitlines()
    for path, value in fields.items():
        keys = path.split(".")
        body = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
        lines = _put(lines, keys, body)
    return "\n".join(lines) + "\n"


def _block(lines: list, key: str, start: int, end: int, indent: int):
    """(first, last + 1) of ``key``'s lines at ``indent`` within lines[start:end], or None."""
    head = " " * indent + key + ":"
    for i in range(start, end):
        if lines[i].startswith(head) and (len(lines[i]) == len(head) or lines[i][len(head)] in " #"):
            j = i + 1
            while j < end and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                j += 1
            return i, j
    return None


def _put(lines: list, keys: list, body: str) -> list:
    start, end, indent = 0, len(lines), 0
    for key in keys[:-1]:
        found = _block(lines, key, start, end, indent)
        if found is None:
            lines = lines[:end] + [" " * indent + key + ":"] + lines[end:]
            found = (end, end + 1)
        start, end, indent = found[0] + 1, found[1], indent + 2
    found = _block(lines, keys[-1], start, end, indent)
    new = [" " * indent + keys[-1] + ": " + body]
    return lines[:found[0]] + new + lines[found[1]:] if found else lines[:end] + new + lines[end:]
