"""Executed schedules (records ``kind: schedule``, benchmarks/measure_schedule.py) against kvsim's
prediction of the same plan on the same emulated GPU (kvsim.schedule.executed.prediction).

Per record: total generation time (prefill + every decode step), the median decode step of each
phase, the peak GPU memory over the decode steps and at the prefill (kvsim's GPU bytes less the
profile's workspace, against torch.cuda.max_memory_allocated, as kvsim validate compares memory),
PCIe bytes; per configuration the ALISA/FlexGen speedup (FlexGen's total over ALISA's), both sides.
Errors are (predicted − measured) / measured. The executor issues every op from the host
(eager, timed with CUDA events), so kvsim's side times the plan's steps on its eager engine,
its host costs at the host clock the run read (``host_probe_s``, kvsim.host_costs.at_host_probe);
the CUDA-graph totals (what ``kvsim schedule`` prints) are shown beside them.
"""
from __future__ import annotations

import numpy as np

from ..errors import KvsimError
from ..host_costs import at_host_probe
from ..profiles import load_profile
from ..report import table
from ..validate import relative_error
from .executed import phase_of, prediction

CONFIG = ("hw", "model", "n_layers", "batch", "prompt", "gen", "gpu_mem_bytes")
PLACEMENT = ("p1", "p2", "alpha", "beta", "weights_gpu")


def _key(record: dict) -> tuple:
    """The configuration (the plan's ALISA parameters, ``schedule_params``, are the same for
    both policies of one run of measure_schedule.py)."""
    missing = [k for k in CONFIG if record.get(k) is None]
    if missing:
        raise KvsimError(f"schedule record ({record.get('policy')}) lacks {', '.join(missing)}")
    return tuple(record[k] for k in CONFIG)


def _phases(policy: str, plan: dict, steps: int) -> list[str]:
    if policy != "alisa":
        return ["prefill"] + ["static"] * (steps - 1)
    return [phase_of(j, plan["p1"], plan["p2"], plan["alpha"], plan["beta"]) for j in range(steps)]


def _medians(phases: list[str], times) -> dict:
    times = np.asarray(times, dtype=float)
    names = [p for p in dict.fromkeys(phases) if p != "prefill"]
    return {p: float(np.median(times[[i for i, q in enumerate(phases) if q == p]])) for p in names}


def compare_one(record: dict, pred: dict) -> dict:
    policy = record.get("policy")
    if policy not in ("alisa", "flexgen"):
        raise KvsimError(f"schedule record: policy must be alisa or flexgen, got {policy!r}")
    side = pred[policy]
    steps = record["steps"]
    n = len(steps)
    if n != len(side["step_s"]):
        raise KvsimError(f"schedule record ({policy}) has {n} steps, the plan {len(side['step_s'])}")
    phases = _phases(policy, side, n)
    measured = [s["latency_s"] for s in steps]
    pm, mm = _medians(phases, side["step_s"]), _medians(phases, measured)
    peak_pred = float(np.max(side["gpu_bytes"][1:])) - pred["workspace_bytes"]
    prefill_pred = float(side["gpu_bytes"][0]) - pred["workspace_bytes"]
    out = {"policy": policy, "config": dict(zip(CONFIG, _key(record))),
           "total": {"predicted": float(np.sum(side["step_s"])), "measured": float(np.sum(measured))},
           "phase_median": {p: {"predicted": pm[p], "measured": mm[p], "err": relative_error(pm[p], mm[p])}
                            for p in pm},
           "peak_gpu": {"predicted": peak_pred, "measured": record.get("peak_memory_bytes")},
           "prefill_gpu": {"predicted": prefill_pred, "measured": record.get("prefill_peak_bytes")},
           "prefill_over_budget": float(side["gpu_bytes"][0]) - pred["gpu_capacity_bytes"],
           "pcie": {"predicted": float(np.sum(side["pcie"])), "measured": record.get("pcie_bytes")},
           "recompute_s": record.get("recompute_s"), "graphs_total_s": side["graphs_total_s"],
           "prefill_sequences": side["prefill_sequences"]}
    for name in ("total", "peak_gpu", "prefill_gpu", "pcie"):
        out[name]["err"] = relative_error(out[name]["predicted"], out[name]["measured"])
    return out


def _number(record: dict, name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise KvsimError(f"schedule record ({record.get('policy')}): {name} must be a number in "
                         f"[{low:g}, {high:g}], got {value!r}")
    return float(value)


def _ran_placement(record: dict):
    """ALISA's placement the run followed (p1, p2, α, β, weights on the GPU), so kvsim times the
    plan that ran even where today's planner would choose another; None for FlexGen (its LP)."""
    plan = record.get("plan") or {}
    if record.get("policy") != "alisa" or any(k not in plan for k in PLACEMENT):
        return None
    steps = _number(record, "gen", record.get("gen"), 1, 1e9) + 1
    p1, p2 = (int(_number(record, f"plan.{k}", plan[k], 0, steps)) for k in ("p1", "p2"))
    return (p1, p2, *(_number(record, f"plan.{k}", plan[k], 0.0, 1.0) for k in PLACEMENT[2:]))


def _prefill_sequences(record: dict) -> int:
    """Sequences a prefill pass of the run took (records before passes ran the whole batch)."""
    batch = record["batch"]
    value = _number(record, "prefill_sequences", record.get("prefill_sequences", batch), 1, batch)
    if value != int(value):
        raise KvsimError(f"schedule record ({record.get('policy')}): prefill_sequences must be a whole number, "
                         f"got {value!r}")
    return int(value)


def compare(records: list[dict]) -> dict:
    """Every record compared; the speedup per configuration that has both policies."""
    preds, rows = {}, []
    for record in records:
        key = _key(record)
        params = record.get("schedule_params") or {}
        probe, plan, passes = record.get("host_probe_s"), _ran_placement(record), _prefill_sequences(record)
        if (key, probe, plan, passes) not in preds:
            hw = at_host_probe(load_profile(key[0]), probe)
            preds[key, probe, plan, passes] = prediction(hw, *key[1:], params=params, placement=plan,
                                                         prefill_sequences=passes)
        rows.append(compare_one(record, preds[key, probe, plan, passes]))
    speedups = []
    for key in dict.fromkeys(k for k, *_ in preds):
        runs = {policy: [r for r in rows if tuple(r["config"].values()) == key and r["policy"] == policy]
                for policy in ("alisa", "flexgen")}
        for alisa, flexgen in zip(runs["alisa"], runs["flexgen"]):  # the runs in file order (one per machine)
            a, f = alisa["total"], flexgen["total"]
            speedups.append({"config": dict(zip(CONFIG, key)), "measured": f["measured"] / a["measured"],
                             "predicted": f["predicted"] / a["predicted"],
                             "graphs": flexgen["graphs_total_s"] / alisa["graphs_total_s"]})
    return {"rows": rows, "speedups": speedups}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _ms(value) -> str:
    return f"{1e3 * value:.3f}"


def text(result: dict) -> str:
    lines = []
    for r in result["rows"]:
        c = r["config"]
        name = (f"{r['policy']} {c['model']}x{c['n_layers']} B={c['batch']} P={c['prompt']} G={c['gen']} "
                f"GPU {c['gpu_mem_bytes'] / 2**30:.3f} GiB")
        t, m, p = r["total"], r["peak_gpu"], r["pcie"]
        lines.append([name, "total (s)", f"{t['predicted']:.4f}", f"{t['measured']:.4f}", _pct(t["err"])])
        lines.append(["", "total (s), CUDA graphs", f"{r['graphs_total_s']:.4f}", "-", "-"])
        for phase, v in r["phase_median"].items():
            lines.append(["", f"median step, {phase} (ms)", _ms(v["predicted"]), _ms(v["measured"]), _pct(v["err"])])
        for label, v in (("peak GPU memory (GiB)", m), ("prefill GPU memory (GiB)", r["prefill_gpu"])):
            lines.append(["", label, f"{v['predicted'] / 2**30:.3f}",
                          "-" if v["measured"] is None else f"{v['measured'] / 2**30:.3f}", _pct(v["err"])])
        lines.append(["", "PCIe (GB)", f"{p['predicted'] / 1e9:.3f}",
                      "-" if p["measured"] is None else f"{p['measured'] / 1e9:.3f}", _pct(p["err"])])
    out = table(lines, ["executed schedule", "quantity", "kvsim", "measured", "error"])
    over = dict.fromkeys(f"{r['prefill_over_budget'] / 2**30:.2f} GiB ({r['policy']}, {r['config']['model']}, "
                         f"{r['config']['gpu_mem_bytes'] / 2**30:.3f} GiB, {r['prefill_sequences']} sequences a pass)"
                         for r in result["rows"] if r["prefill_over_budget"] > 0)
    if over:
        out += ("\nkvsim: the executor's prefill holds its GPU pools for the whole run beside the prompt's "
                "activations, over the emulated budget by " + ", ".join(over))
    for s in result["speedups"]:
        c = s["config"]
        out += (f"\nALISA/FlexGen speedup, {c['model']}x{c['n_layers']} B={c['batch']} P={c['prompt']} "
                f"G={c['gen']} GPU {c['gpu_mem_bytes'] / 2**30:.3f} GiB: measured {s['measured']:.2f}x, "
                f"kvsim {s['predicted']:.2f}x (steps issued eagerly, as run; {s['graphs']:.2f}x with CUDA graphs, "
                "as kvsim schedule reports)")
    return out
