"""Published quality: what a method's setting costs in accuracy, relative to dense attention.

Each method's published scores (paper tables, official repositories) live in its own folder,
``kvsim/methods/<name>/quality.yaml`` (found through the method registry), one entry per setting,
each naming a table of ``kvsim/data/quality.yaml``: its source, model, benchmark, context and the
dense score of the same table. ``relative`` is score / dense for benchmarks where
higher is better (dense / score where lower is better, e.g. perplexity), so 1.0 means "as good
as dense" and 0.5 "half the dense accuracy" in both cases.

A configuration's quality is one of:
  exact    the method keeps or attends to the whole context (``kept_fraction``), so its output is
           dense attention's; dense itself is always exact.
  known    a published entry of the same method, benchmark and model (same weights) whose kept
           share of the context is within BUDGET_FACTOR of this one's, at a context within
           CONTEXT_FACTOR, with the same non-budget settings (TidalDecode's re-selection layer,
           Quest's page size, ALISA's KV bits): its relative score is reported. The kept share is
           the budget: DuoAttention's retrieval-head ratio plus its streaming heads' sink + recent
           windows, ALISA's 1 − KV sparsity, the others' tokens over the context.
  unknown  otherwise, with the nearest entry and how far it is.
Nearest: same method; then same benchmark, same model, same settings, closest kept share
(|log| of the ratio), closest context (|log| of the ratio), in that order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from .errors import KvsimError
from .methods import get_method
from .models import load_model
from .quality_data import Published, load_quality
from .units import format_tokens
from .workload import Workload

DEFAULT_BENCHMARK = "retrieval"  # long-context use: can the model still find what it was given
BUDGET_FACTOR = 2.0  # a published setting speaks for kept shares within 2x of its own
CONTEXT_FACTOR = 2.0  # ... at contexts within 2x of its own
SETTINGS = {"tidaldecode": ("reselect_layer",), "quest": ("page_size",),  # compared, not budget
            "alisa": ("kv_bits",)}


# ---- what a configuration keeps ------------------------------------------------------------
def _window(kept, S):
    """Methods that hold ``kept`` past tokens + the new one: exact once kept >= S - 1."""
    kept = np.asarray(kept, dtype=float)
    return np.minimum(kept + 1.0, S) / S, kept >= S - 1


def _sparq(m, model, S):
    k, r = m.rows(Workload(seq=S)), m.rank(model)
    return np.minimum(r / (2 * model.head_dim) + k / S, 1.0), k >= S


def _duo(m, model, S):
    rho = m.ratio(model)
    share, covered = _window(m.window, S)
    return rho + (1 - rho) * share, (rho >= 1) | covered


_KEPT = {
    "dense": lambda m, model, S: (np.ones_like(S), np.ones_like(S, dtype=bool)),
    "sparq": _sparq,
    "quest": lambda m, model, S: (np.minimum(m.budget / S, 1.0), m.budget >= S),
    "tidaldecode": lambda m, model, S: _window(m.k, S),
    "h2o": lambda m, model, S: _window(sum(m.budgets(S)), S),
    "streamingllm": lambda m, model, S: _window(m.sink + m.recent, S),
    "duoattention": _duo,
    "alisa": lambda m, model, S: (np.full_like(S, 1.0 - m.sparsity),  # INT8 KV is never exact
                                  np.full_like(S, m.sparsity == 0 and m.kv_bits == 16, dtype=bool)),
    "adore": lambda m, model, S: _window(m.m, S),
}


def kept_fraction(method, model, seq):
    """(share of the context the method keeps or attends to, exact) at each context in ``seq``;
    ``method`` a Method (its effective parameters) or a name. Vectorized over ``seq``."""
    method, model = get_method(method), load_model(model)
    S = np.asarray(seq, dtype=float)
    share, exact = _KEPT[method.name](method, model, S)
    return np.broadcast_to(share, S.shape).astype(float), np.broadcast_to(exact, S.shape)


# ---- nearest published setting ---------------------------------------------------------------
@dataclass(frozen=True)
class Quality:
    status: str  # exact | known | unknown
    benchmark: str
    fraction: float  # this configuration's kept share of the context
    relative: Optional[float] = None  # exact: 1.0; known: the entry's; unknown: None
    nearest: Optional[Published] = None
    reasons: tuple = ()  # how the nearest entry differs; empty when it matches
    distance: dict = field(default_factory=dict)

    @property
    def source(self) -> Optional[str]:
        return self.nearest.source if self.status == "known" else None

    def cell(self) -> str:
        """A table cell: 'exact', '0.93', 'unknown'."""
        return f"{self.relative:.2f}" if self.status == "known" else self.status

    def as_dict(self) -> dict:
        near = asdict(self.nearest) if self.nearest else None
        return dict(status=self.status, benchmark=self.benchmark, relative=self.relative,
                    source=self.source, budget_fraction=self.fraction, reasons=list(self.reasons),
                    distance=self.distance, nearest=near)

    def line(self) -> str:
        """One line for people."""
        if self.status == "exact":
            return "exact: the whole context is kept, so the output is dense attention's"
        n = self.nearest
        if n is None:
            return f"unknown on {self.benchmark}: {'; '.join(self.reasons)}"
        where = (f"{n.relative:.2f} of dense ({n.score:g} vs {n.dense:g}), {n.task}, {n.model}, "
                 f"{format_tokens(n.context)} context, keeps {n.fraction:.3g} of it; {n.source}")
        if self.status == "known":
            return f"{self.relative:.2f} of dense on {self.benchmark} (published: {where})"
        return f"unknown on {self.benchmark} ({'; '.join(self.reasons)}); nearest published: {where}"


def quality(method, model, seq: int, benchmark: str = DEFAULT_BENCHMARK, path=None) -> Quality:
    """The quality of ``method`` (a Method with its effective parameters, or a name) on ``model``
    at context ``seq``, from the nearest published entry (module docstring)."""
    marks, entries = load_quality(path)
    if benchmark not in marks:
        raise KvsimError(f"unknown quality benchmark '{benchmark}'; choose one of: {', '.join(marks)}")
    method, model = get_method(method), load_model(model)
    share, exact = (float(x) for x in kept_fraction(method, model, float(seq)))
    if exact:
        return Quality("exact", benchmark, share, relative=1.0)
    mine = [e for e in entries if e.method == method.name]
    if not mine:
        return Quality("unknown", benchmark, share,
                       reasons=(f"no published result for {method.name} in kvsim's quality data",))
    scored = [(_distance(e, method, model.name, seq, share, benchmark), e) for e in mine]
    distance, nearest = min(scored, key=lambda pair: pair[0]["key"])
    reasons = _reasons(distance, nearest, model.name, seq, share, benchmark)
    known = not reasons
    return Quality("known" if known else "unknown", benchmark, share,
                   relative=nearest.relative if known else None, nearest=nearest, reasons=tuple(reasons),
                   distance={k: v for k, v in distance.items() if k != "key"})


def _distance(entry: Published, method, model_name: str, seq: float, share: float, benchmark: str) -> dict:
    settings = {name: (getattr(method, name), entry.params[name]) for name in SETTINGS.get(method.name, ())
                if name in entry.params and getattr(method, name) != entry.params[name]}
    budget, context = share / entry.fraction, seq / entry.context
    return dict(same_benchmark=entry.benchmark == benchmark, same_model=entry.kvsim_model == model_name,
                settings=settings, budget_ratio=budget, context_ratio=context,
                key=(entry.benchmark != benchmark, entry.kvsim_model != model_name, bool(settings),
                     abs(np.log(budget)), abs(np.log(context))))


def _reasons(d: dict, entry: Published, model_name: str, seq: float, share: float, benchmark: str) -> list[str]:
    out = [] if d["same_benchmark"] else [f"published on {entry.benchmark}, not {benchmark}"]
    if not d["same_model"]:
        out.append(f"published on another model ({entry.model}, not {model_name})")
    out += [f"{name}={mine:g} vs {theirs:g} published" for name, (mine, theirs) in d["settings"].items()]
    if not 1 / BUDGET_FACTOR <= d["budget_ratio"] <= BUDGET_FACTOR:
        out.append(f"keeps {share:.3g} of the context vs {entry.fraction:.3g} published ({d['budget_ratio']:.3g}x)")
    if not 1 / CONTEXT_FACTOR <= d["context_ratio"] <= CONTEXT_FACTOR:
        out.append(f"context {format_tokens(int(seq))} vs {format_tokens(entry.context)} published")
    return out


# ---- plan: a quality column and a floor ------------------------------------------------------
def plan_quality(options, model, seq: int, params: dict | None = None, benchmark: str = DEFAULT_BENCHMARK,
                 floor: float | None = None) -> tuple[list[Quality], np.ndarray, list[str]]:
    """For plan's options (anything with ``.method``): each one's Quality (computed once per
    method: quality does not depend on the hardware or batch), a keep-mask (all kept without a
    ``floor``; with one, exact or known quality >= floor), and why each option was excluded ('')."""
    from .sweep import method_params

    per_method = {name: quality(get_method(name, method_params(name, params)), model, seq, benchmark)
                  for name in dict.fromkeys(o.method for o in options)}
    found = [per_method[o.method] for o in options]
    relative = np.array([q.relative if q.relative is not None else np.nan for q in found], dtype=float)
    keep = np.ones(len(found), bool) if floor is None else np.nan_to_num(relative, nan=-1.0) >= floor
    why = ["" if k else _excluded(o.method, q, floor) for o, q, k in zip(options, found, keep)]
    return found, keep, why


def _excluded(name: str, q: Quality, floor: float) -> str:
    if q.relative is None:
        return f"{name}: quality unknown ({'; '.join(q.reasons)})"
    return f"{name}: {q.relative:.2f} of dense on {q.benchmark}, below the floor {floor:g}"


def parse_benchmark(text: str) -> str:
    """--quality-benchmark: a benchmark of the shipped quality file."""
    marks, _ = load_quality()
    if text not in marks:
        raise KvsimError(f"unknown quality benchmark '{text}'; choose one of: {', '.join(marks)}")
    return text


def parse_floor(text: str) -> float:
    """--quality-floor: a share of dense quality in [0, 1] (1 keeps only what matches dense)."""
    try:
        value = float(text)
    except ValueError:
        raise KvsimError(f"--quality-floor takes a number in [0, 1] (quality relative to dense), got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise KvsimError(f"--quality-floor must lie in [0, 1] (quality relative to dense), got {text!r}")
    return value
