"""Shared by the executed-schedule tests (CPU, and tests/gpu): no environment set-up here."""


def cache_tensors(run) -> dict:
    """Every GPU and host tensor the run's cache holds, by name."""
    method = run["method"]
    if hasattr(method.kv, "arena"):
        out = {"arena": method.kv.arena}
        for i, layer in enumerate(method.kv.layers):
            out.update({f"{i}.host.{f}": t for f, t in layer.host.items()}, **{f"{i}.xhost": layer.xhost})
        return out | {f"{i}.acc": a for i, a in enumerate(method.acc)}
    out = {}
    for i, layer in enumerate(method.kv.layers):
        for side in ("t", "dev", "host"):
            out.update({f"{i}.{side}.{f}": t for f, t in getattr(layer, side, {}).items()})
    return out
