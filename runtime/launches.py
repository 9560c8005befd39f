"""What the host issues for a call of the runtime, counted by kind: torch calls that launch
kernels, that run cuBLAS matrix products, that only make views or allocate; Triton kernel
launches and their runtime arguments; host syncs. An eager step pays host time for each (kvsim's
eager engine charges the same kinds, ``kvsim.cost.Op.host_calls``).

    with LaunchCounter() as counter:
        engine.step()
    counter.counts   # {"torch": 37, "torch_gemm": 17, "torch_host": 54, "triton": 12, ...}

Works on CUDA and under the Triton interpreter on CPU (tests/test_engine.py).
"""
from __future__ import annotations

import torch

LAUNCH_KINDS = ("torch", "torch_gemm", "torch_host", "triton", "triton_args", "sync")
_GEMMS = ("aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default")
_ALLOCATIONS = ("aten.empty.memory_format", "aten.empty_strided.default", "aten.empty_like.default",
                "aten.new_empty.default", "aten.new_empty_strided.default")


def _reads_back(func, args, kwargs) -> bool:
    """Whether an aten op makes the host wait for the device: it returns device data to the host
    (.item()), its output shape depends on the data (nonzero, boolean masks), or it copies
    device memory into pageable host memory (.cpu(), .tolist()); not a non_blocking copy into
    pinned memory (runtime/offload.py's evictions)."""
    name = str(func)
    if name in ("aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default"):
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
    if {torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape} & set(func.tags):
        return True
    if name in ("aten._to_copy.default", "aten.copy_.default"):
        src = args[1] if name == "aten.copy_.default" else args[0]
        dst = args[0].device if name == "aten.copy_.default" else (kwargs.get("device") or src.device)
        if name == "aten.copy_.default" and _non_blocking(args, kwargs) and args[0].is_pinned():
            return False  # into pinned memory, non_blocking: an async copy the host does not wait for
        return src.device.type == "cuda" and torch.device(dst).type == "cpu"
    return False


def _non_blocking(args, kwargs) -> bool:
    """copy_(self, src, non_blocking=False)'s flag."""
    return bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False))


def _aten_kind(func, args, kwargs) -> str:
    """What one aten op costs the host: a host sync (:func:`_reads_back`), a kernel launch
    ("torch"), or host work only ("torch_host": a view, an allocation)."""
    if _reads_back(func, args, kwargs):
        return "sync"
    if str(func) in _GEMMS:
        return "torch_gemm"
    if str(func) in _ALLOCATIONS:
        return "torch_host"
    returns = func._schema.returns
    if returns and returns[0].alias_info is not None and not func._schema.is_mutable:
        return "torch_host"  # a view of its input
    return "torch"


class LaunchCounter:
    """Counts what the host issues while active (``with LaunchCounter() as c: fn()``; then
    ``c.counts``): each top-level torch call once, as "torch_gemm" if it ran a matrix product
    (cuBLAS), else "torch" if it launched a kernel, else "torch_host" (views, allocations);
    each Triton kernel launch ("triton", the torch calls the launcher makes inside not counted)
    and its runtime (positional) arguments ("triton_args"); each host sync ("sync", also counted
    as its torch call where one launched a copy). Works on CUDA and under the Triton interpreter
    on CPU."""

    def __init__(self):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode
        counter = self
        self.counts = dict.fromkeys(LAUNCH_KINDS, 0)
        self._call: set | None = None  # aten kinds seen inside the current top-level call
        self._in_triton = 0

        class Calls(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                return counter._torch_call(func, args, kwargs or {})

        class Atens(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if counter._call is not None and not counter._in_triton:
                    counter._call.add(_aten_kind(func, args, kwargs or {}))
                return func(*args, **(kwargs or {}))

        self._modes = (Calls(), Atens())

    def _torch_call(self, func, args, kwargs):
        if self._call is not None or self._in_triton:
            return func(*args, **kwargs)
        self._call = set()
        try:
            return func(*args, **kwargs)
        finally:
            kinds, self._call = self._call, None
            if kinds:
                launched = "torch" if kinds & {"torch", "sync"} else "torch_host"
                self.counts["torch_gemm" if "torch_gemm" in kinds else launched] += 1
            self.counts["sync"] += "sync" in kinds

    def _launch(self, run):
        counter = self

        def counted(kernel, *args, **kwargs):
            if not counter._in_triton:
                counter.counts["triton"] += 1
                counter.counts["triton_args"] += len(args)
            counter._in_triton += 1
            try:
                return run(kernel, *args, **kwargs)
            finally:
                counter._in_triton -= 1
        return counted

    def __enter__(self):
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
        self._patched = [(cls, cls.run) for cls in (JITFunction, InterpretedFunction)]
        for cls, run in self._patched:
            cls.run = self._launch(run)
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        for cls, run in self._patched:
            cls.run = run
        return False


def count_launches(fn) -> dict:
    """{kind: count} of what the host issues in one call of ``fn`` (:class:`LaunchCounter`)."""
    if fn is None:
        return {}
    with LaunchCounter() as counter:
        fn()
    return dict(counter.counts)


PROBE_CALLS = 64  # tiny torch calls per host-clock probe: ~0.5 ms of host time, far inside the launch queue


def host_probe(device, scratch=None) -> float:
    """The host clock as the runtime's host work sees it: seconds per call of a burst of
    PROBE_CALLS tiny in-place torch calls (one launch each on CUDA), timed on the host with no
    sync inside. Host costs scale with it (a busier or slower-clocked host), so a record and a
    host-cost fit that carry it can be compared at one host speed (kvsim.host_costs.at_host_probe)."""
    import time
    x = scratch if scratch is not None else torch.zeros(1, device=device)
    start = time.perf_counter()
    for _ in range(PROBE_CALLS):
        x.add_(1.0)
    return (time.perf_counter() - start) / PROBE_CALLS
