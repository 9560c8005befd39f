"""kvsim hw list | hw show NAME | models | methods."""
from __future__ import annotations

from ..hardware import trust_of
from ..profiles import list_profiles, load_profile
from ..methods import METHODS
from ..models import PRESETS
from ..report import table
from ..units import format_bytes, format_count, format_tokens
from .common import dump_json


def register(sub) -> None:
    hw = sub.add_parser("hw", help="list or show hardware profiles")
    hw_sub = hw.add_subparsers(dest="hw_command", required=True, parser_class=sub._parser_class)
    hw_sub.add_parser("list", help="every known profile").set_defaults(run=run_hw_list)
    show = hw_sub.add_parser("show", help="one profile with every number and its source")
    show.add_argument("name")
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(run=run_hw_show)
    sub.add_parser("models", help="model presets").set_defaults(run=run_models)
    sub.add_parser("methods", help="methods with their parameters and papers").set_defaults(run=run_methods)


def run_hw_list(args) -> int:
    rows = []
    for p in list_profiles():
        peak = p.compute.peak(p.preferred_dtype)
        rows.append([p.name, ", ".join(p.aliases), p.kind, format_bytes(p.memory.capacity_bytes.value),
                     format_count(p.memory.bandwidth_Bps.value, "B/s"),
                     f"{format_count(peak, 'FLOP/s')} {p.preferred_dtype}",
                     p.host_link.name if p.host_link else "-"])
    print(table(rows, ["name", "aliases", "kind", "memory", "bandwidth", "peak", "host link"]))
    return 0


SOURCE_WIDTH = 60  # characters of a model source per line in `kvsim models`
LINE_WIDTH = 118  # hw show's lines stay under 120 characters
VALUE_WIDTH = 26


def _wrapped(rows: list[list[str]]) -> list[list[str]]:
    """Rows of field, value, trust, source with long values and sources continued on rows of their
    own, the source column as wide as the line leaves."""
    import textwrap

    field_width = max(len(r[0]) for r in rows)
    source_width = max(24, LINE_WIDTH - field_width - VALUE_WIDTH - len("transferred") - 6)
    out = []
    for field, value, trust, source in rows:
        values = textwrap.wrap(value, VALUE_WIDTH) or [""]
        sources = textwrap.wrap(source, source_width, break_long_words=True) or [""]
        height = max(len(values), len(sources))
        values += [""] * (height - len(values))
        sources += [""] * (height - len(sources))
        out += [[field if i == 0 else "", values[i], trust if i == 0 else "", sources[i]] for i in range(height)]
    return out


def _walk(prefix: str, value, rows: list) -> None:
    """Rows of field, value, trust (datasheet / measured / transferred / assumed), source."""
    if isinstance(value, dict) and set(value) == {"value", "source"}:
        rows.append([prefix, f"{value['value']:.4g}", trust_of(value["source"]), value["source"]])
    elif isinstance(value, dict) and set(value) == {"points", "source"}:
        points = " ".join(f"{s:.1e}:{e:.2f}" for s, e in value["points"])
        rows.append([prefix, points, trust_of(value["source"]), value["source"]])
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(f"{prefix}.{key}" if prefix else key, item, rows)
    elif len(str(value)) > VALUE_WIDTH:
        rows.append([prefix, "", "", str(value)])
    else:
        rows.append([prefix, str(value), "", ""])


def run_hw_show(args) -> int:
    profile = load_profile(args.name)
    data = profile.model_dump(exclude_none=True)
    if args.format == "json":
        print(dump_json(data))
        return 0
    rows: list = []
    _walk("", data, rows)
    print(f"{profile.name}: every number in SI base units (bytes, seconds, FLOP/s), with its trust and source;\n"
          f"predictions on it carry the '{profile.trust_class}' interval (kvsim.intervals)\n")
    print(table(_wrapped(rows), ["field", "value", "trust", "source"]))
    return 0


def run_models(args) -> int:
    import textwrap

    rows = []
    for m in PRESETS.values():
        source = textwrap.wrap(m.source, SOURCE_WIDTH, break_long_words=True) or [""]
        rows.append([m.name, f"{m.n_params / 1e9:.2f}B", m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim,
                     m.ffn_dim, m.vocab, format_tokens(m.max_context), source[0]])
        rows += [[""] * 9 + [line] for line in source[1:]]
    print(table(rows, ["model", "params", "layers", "heads", "kv heads", "head dim", "ffn", "vocab", "context", "source"]))
    return 0


def run_methods(args) -> int:
    for name, cls in METHODS.items():
        params = ", ".join(f"{p}={d}" for p, d, _ in cls.parameters()) or "(no parameters)"
        print(f"{name:14s} {cls.summary}\n{'':14s} parameters: {params}\n{'':14s} paper: {cls.paper}")
        for pname, default, desc in cls.parameters():
            if desc:
                print(f"{'':16s}{pname}: {desc}")
    return 0
