"""Measurement harness: decode-step and attention-only latency, PCIe bytes and peak memory of one
method on the synthetic decoder, as a kvsim record (kvsim/records.py) with source "measured".

Timing (after triton.testing.do_bench): ``warmup`` untimed steps, then
``steps`` timed ones, median reported; on CUDA each timed call is bracketed by CUDA events and
preceded by a write of a buffer of 4× L2 (so no cache rows or weights stay in L2; the flush is
outside the events); on CPU time.perf_counter. The context grows one token per step: the timed
steps attend to seq − steps//2 … seq + steps − steps//2 − 1 tokens, so the median one sees
``seq`` (``contexts``: the first and last). Each timed step follows a timed attention-only call
at the same context. CUDA-graph replays repeat one captured step and one attention-only call,
a few tokens past the eager ones: ``timed_contexts`` says at which contexts.
``backends``: the implementation of each runtime op the timed decode steps called;
``prefill_backends``: those of the (untimed, synthetic) prefill, listed apart.
``gpu_busy_s`` (CUDA only): the summed time of the kernels one step runs (torch.profiler),
i.e. the latency without the host's launch gaps and syncs of this eager-mode runtime.

``eager["host_probe_s"]``: the host clock during the eager timings (runtime/launches.py
host_probe, before each timed pair, median): eager times scale with it.

``launches`` (step and attention-only): what the host issues in one call, counted by
runtime/launches.py: torch calls that launch kernels, torch calls that only make views or
allocate, Triton kernel launches, and host syncs (an eager step pays host time for each).

HBM bytes come from Nsight Compute in a separate wrapper: ``run_steps_for_profiling`` runs one
warm decode step between torch.cuda.profiler.start()/stop(), for
``ncu --profile-from-start off --metrics dram__bytes_read.sum,dram__bytes_write.sum``.
"""
from __future__ import annotations

import datetime
import statistics
import time

import torch

from . import ops
from .engine import Engine, offload_fraction
from .environment import device_name, versions
from .launches import LAUNCH_KINDS, LaunchCounter, count_launches, host_probe  # noqa: F401 - re-exported
from .model import DTYPE_NAMES

L2_FLUSH_MULTIPLE = 4  # the flush writes 4 × the L2 of the device (its profile's memory.l2_bytes)


def l2_flush_bytes(device: torch.device) -> int:
    """4 × the L2 of this GPU's profile; of the largest L2 among the shipped GPU profiles where
    none names this GPU."""
    from kvsim.profiles import list_profiles, load_profile, profile_for_device
    name = profile_for_device(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    l2 = (load_profile(name).memory.l2_bytes.value if name else
          max(p.memory.l2_bytes.value for p in list_profiles() if p.kind == "gpu"))
    return int(L2_FLUSH_MULTIPLE * l2) // 4 * 4


class _Timer:
    def __init__(self, device: torch.device, flush: bool):
        self.cuda = device.type == "cuda"
        self.flush = (torch.empty(l2_flush_bytes(device) // 4, dtype=torch.int32, device=device)
                      if self.cuda and flush else None)
        self.pending: list = []

    def time(self, fn, *args):
        """Run fn; its time is collected by ``results`` (CUDA events resolve after a sync)."""
        if not self.cuda:
            start = time.perf_counter()
            out = fn(*args)
            self.pending.append(time.perf_counter() - start)
            return out
        if self.flush is not None:
            self.flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(*args)
        end.record()
        self.pending.append((start, end))
        return out

    def results(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [s.elapsed_time(e) / 1e3 for s, e in self.pending]
        return list(self.pending)


def _peak_memory(engine: Engine) -> tuple[int, str]:
    """Peak allocated bytes over one more decode step (CUDA); on CPU the tensor sizes."""
    if engine.device.type != "cuda":
        engine.step()
        return engine.model.weight_bytes + engine.kv_bytes, "weights + cache tensor sizes"
    torch.cuda.synchronize()
    # torch keeps a cuBLAS workspace (32 MiB on Hopper) for every stream that ever ran a GEMM;
    # the side streams of earlier configurations' graph captures would count here
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    torch.cuda.reset_peak_memory_stats(engine.device)
    engine.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(engine.device), "torch.cuda.max_memory_allocated"


def _busy_time(engine: Engine, fn, repeats: int = 3) -> float | None:
    """Median over ``repeats`` calls of the summed GPU time of the kernels and copies one call
    runs (torch.profiler): the step without host gaps (launches, syncs), what a roofline sums."""
    if engine.device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile
    times = []
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        times.append(sum(e.self_device_time_total for e in prof.key_averages()) / 1e6)
    return statistics.median(times)


def _engine(method, seq, batch, model, n_layers, params, extra_steps, spare: int = 0, **kw) -> tuple[Engine, int]:
    """An engine whose prefill leaves room for ``extra_steps`` decode steps ending past ``seq``
    (and ``spare`` more)."""
    prefill = max(1, seq - 1 - extra_steps)
    engine = Engine(model, method, params, batch=batch, max_seq=prefill + extra_steps * 2 + 64 + spare,
                    n_layers=n_layers, **kw)
    engine.prefill_synthetic(prefill, context=seq)
    return engine, prefill


def _time_steps(engine: Engine, steps: int, warmup: int, flush_l2: bool) -> tuple[list, dict, float]:
    """[attention-only, step, attention-only, step, ...] times, PCIe bytes of the steps, and the
    median host-clock probe (runtime/launches.py host_probe) taken before each pair, untimed."""
    timer = _Timer(engine.device, flush_l2)
    for _ in range(warmup):
        engine.attention_only_step()
        engine.step()
    moved = {"h2d": 0, "d2h": 0}
    scratch, probes = torch.zeros(1, device=engine.device), []
    for _ in range(steps):
        probes.append(host_probe(engine.device, scratch))
        timer.time(engine.attention_only_step)
        before = engine.pcie_bytes
        timer.time(engine.step)
        for key, value in engine.pcie_bytes.items():
            moved[key] += value - before[key]
    return timer.results(), moved, statistics.median(probes)


def synced_times(engine: Engine, steps: int, flush_l2: bool) -> dict:
    """Attention-only calls and steps each timed alone: every stream idle before, all done after
    (torch.cuda.synchronize, host clock; the L2 flush outside), so a side stream's copies count
    in the call that issued them. Median latencies and the steps' contexts (first, last)."""
    cuda = engine.device.type == "cuda"
    flush = (torch.empty(l2_flush_bytes(engine.device) // 4, dtype=torch.int32, device=engine.device)
             if cuda and flush_l2 else None)

    def timed(fn) -> float:
        if flush is not None:
            flush.zero_()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = engine.length + 1  # the first timed step attends length + 1 rows
    pairs = [(timed(engine.attention_only_step), timed(engine.step)) for _ in range(steps)]
    return {"latency_s": statistics.median(p[1] for p in pairs), "contexts": [first, first + steps - 1],
            "attention_latency_s": statistics.median(p[0] for p in pairs),
            "timer": "perf_counter between device syncs (every stream), eager"}


def _graph_times(engine: Engine, steps: int, flush_l2: bool) -> tuple[list, str, dict]:
    """([attention-only, step, ...] replay times of captured graphs, how, {"step", "attention":
    the context each graph replays}), or ([], why not, {}). A replay
    runs the same kernels at the same context without host launch gaps, as serving engines run
    decode steps; a step with a host sync (data-dependent shapes) cannot be captured. An
    offloaded step's side-stream copies are forked from and joined to the captured stream
    inside the step (runtime/offload.py), so they are captured with it."""
    if engine.device.type != "cuda":
        return [], "no CUDA", {}
    from kvsim.kernels._common import capture_graph as _capture
    tokens = torch.randint(engine.cfg.vocab, (engine.batch,), device=engine.device)  # fixed ids: no RNG in the graph
    torch.cuda.empty_cache()  # hand back the prefill's freed blocks before the graphs allocate their own
    try:
        attention = _capture(engine.attention_only_step)
        contexts = {"attention": engine.length + 1}  # attention-only at position n reads n + 1 rows
        step = _capture(lambda: engine.step(tokens))
        contexts["step"] = engine.length  # the captured call was the last step: its context is n now
    except Exception as exc:  # capture refuses host syncs: report why, keep the eager timings
        torch.cuda.synchronize()
        return [], f"not capturable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", {}
    return replay_times(engine.device, attention, step, steps, flush_l2), "cuda graph replay", contexts


def replay_times(device, attention, step, steps: int, flush_l2: bool) -> list[float]:
    """[attention-only, step, ...] times of ``steps`` pairs of graph replays, after 3 warm pairs."""
    timer = _Timer(device, flush_l2)
    for _ in range(3):
        attention(), step()
    for _ in range(steps):
        timer.time(attention)
        timer.time(step)
    return timer.results()


def measure(method: str = "dense", seq: int = 4096, batch: int = 1, model="llama-3.1-8b",
            n_layers: int | None = None, params: dict | None = None, steps: int = 50, warmup: int = 5,
            *, device=None, dtype=None, kv_dtype: str | None = None, offload=False, hw: str | None = None,
            seed: int = 0, flush_l2: bool = True, graphs: bool = True, busy_time: bool = True) -> dict:
    """Measure one configuration; returns a record (see module docstring). A configuration that
    does not fit in GPU memory returns a record with ``fits: False`` and the error.
    ``latency_s`` is the CUDA-graph replay time where the step can be captured (``timer`` says
    which), else the eager time; ``eager`` always holds the eager step and attention times;
    offloaded, ``synced`` holds them timed between device syncs too (:func:`synced_times`).
    ``busy_time=False`` skips torch.profiler (``gpu_busy_s`` None): its hooks stay attached to the
    process and slow every later host call (the host-clock probe 6.1 -> 8.0 us on the H100), so a
    process that times several eager configurations must not run it."""
    kw = dict(device=device, dtype=dtype, kv_dtype=kv_dtype, offload=offload, seed=seed)
    ops.reset()  # so ``backends`` lists what this configuration ran
    try:
        engine, prefill = _engine(method, seq, batch, model, n_layers, params, warmup + steps // 2,
                                  spare=steps if offload_fraction(offload) else 0, **kw)  # + the synced steps
        prefill_backends = ops.backends()
        ops.reset()  # from here: the decode steps' backends, apart from the prefill's
        first = engine.length + warmup + 1
        times, moved, probe = _time_steps(engine, steps, warmup, flush_l2)
        synced = synced_times(engine, steps, flush_l2) if offload_fraction(offload) else None
        busy = ((_busy_time(engine, engine.step), _busy_time(engine, engine.attention_only_step))
                if busy_time else (None, None))
        launches = {"step": count_launches(engine.step), "attention": count_launches(engine.attention_only_step)}
        memory, memory_how = _peak_memory(engine)
        graphed, graph_how, replayed = _graph_times(engine, steps, flush_l2) if graphs else ([], "not asked", {})
    except torch.cuda.OutOfMemoryError as exc:
        return _record_base(method, seq, batch, model, n_layers, params, kw, hw) | {
            "fits": False, "error": f"out of memory: {str(exc).splitlines()[0]}"}
    record = _record_base(method, seq, batch, engine.cfg.name, engine.model.n_layers, engine.params_record, kw, hw)
    record.update(
        dtype=DTYPE_NAMES[engine.dtype], kv_dtype=engine.kv_dtype_name,
        resolved_params=engine.params, fits=True,
        latency_s=statistics.median(times[1::2]), gpu_busy_s=busy[0],
        attention={"latency_s": statistics.median(times[0::2]), "gpu_busy_s": busy[1]},
        pcie_bytes=(moved["h2d"] + moved["d2h"]) / steps, pcie={k: v / steps for k, v in moved.items()},
        memory_bytes=memory, memory_how=memory_how, kv_bytes=engine.kv_bytes, host_kv_bytes=engine.host_kv_bytes,
        weight_bytes=engine.model.weight_bytes, contexts=[first, first + steps - 1], prefill=prefill,
        steps=steps, warmup=warmup, launches=launches, timer="cuda events" if engine.device.type == "cuda" else "perf_counter",
        l2_flush_bytes=l2_flush_bytes(engine.device) if engine.device.type == "cuda" and flush_l2 else 0,
        backends=ops.backends(), prefill_backends=prefill_backends)
    record["eager"] = {"latency_s": record["latency_s"], "attention_latency_s": record["attention"]["latency_s"],
                       "host_probe_s": probe}
    if synced:
        record["synced"] = synced
    if graphed:  # replays repeat one captured step: its context is the one to predict
        record["latency_s"] = statistics.median(graphed[1::2])
        record["attention"]["latency_s"] = statistics.median(graphed[0::2])
        record["timed_contexts"] = replayed
    record["timer"] = f"{record['timer']}, {graph_how if graphed else 'eager (' + graph_how + ')'}"
    record["tokens_per_s"] = batch / record["latency_s"]
    return record


def _record_base(method, seq, batch, model, n_layers, params, kw, hw) -> dict:
    device = torch.device(kw["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
    record = {"source": "measured", "device": device_name(device),
              "model": model if isinstance(model, str) else model.name,
              "method": method, "params": dict(params or {}), "batch": batch, "seq": seq, "gen": 0,
              "gpus": 1, "n_layers": n_layers, "offload": offload_fraction(kw["offload"]), **versions(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if hw is not None:
        record["hw"] = hw
    return record


def run_steps_for_profiling(method: str = "dense", seq: int = 4096, batch: int = 1, model="llama-3.1-8b",
                            n_layers: int | None = None, params: dict | None = None, warmup: int = 3,
                            *, attention_only: bool = False, device=None, dtype=None,
                            kv_dtype: str | None = None, offload=False, seed: int = 0) -> dict:
    """Warm up, then run exactly one decode step (or attention-only step, at context ``seq``)
    between torch.cuda.profiler.start() and stop(); returns what ran."""
    ops.reset()
    engine, prefill = _engine(method, seq, batch, model, n_layers, params, warmup,
                              device=device, dtype=dtype, kv_dtype=kv_dtype, offload=offload, seed=seed)
    prefill_backends = ops.backends()
    ops.reset()  # the profiled steps' backends, apart from the prefill's
    for _ in range(warmup):
        engine.step()
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
    context = engine.length + 1
    (engine.attention_only_step if attention_only else engine.step)()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    return {"method": method, "model": engine.cfg.name, "batch": batch, "seq": context,
            "n_layers": engine.model.n_layers, "params": engine.params_record,
            "resolved_params": engine.params, "attention_only": attention_only,
            "device": device_name(engine.device), "backends": ops.backends(),
            "prefill_backends": prefill_backends}
