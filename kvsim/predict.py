"""The public entry: predict(hw, model, method, ...) -> Prediction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .cost import Cost
from .decoder import tensor_parallel_ops
from .errors import KvsimError
from .hardware import HardwareProfile
from .profiles import load_profile
from .methods import Method, get_method
from .models import DEFAULT_MODEL, ModelConfig, load_model
from .offload import check_fraction, offload_cost, require_host_link
from .roofline import StepTime, graph_replay_time, step_time
from .topology import check_gpus
from .units import format_bytes
from .workload import Workload

EXACT_GENERATION_STEPS = 4096  # longer generations integrate over sampled steps
SAMPLED_STEPS = 1025


@dataclass(frozen=True)
class Generation:
    """Prefill of the prompt, then ``gen`` decode steps at contexts prompt+1 .. prompt+gen."""

    ttft_s: np.ndarray
    decode_s: np.ndarray
    total_s: np.ndarray
    tokens_per_s: np.ndarray  # batch·gen / total
    peak_gpu_bytes: np.ndarray
    peak_host_bytes: np.ndarray
    prefill: StepTime


@dataclass(frozen=True)
class Prediction:
    hw: HardwareProfile
    model: ModelConfig
    method: Method
    workload: Workload
    cost: Cost
    timing: StepTime
    generation: Optional[Generation] = None
    gpus: int = 1
    offload: float = 0.0  # fraction of the KV cache in host memory (kvsim.offload)

    @property
    def latency_s(self):
        return self.timing.latency_s

    @property
    def latency_interval(self):
        """(low, high), shaped like latency_s: the 90% interval of the step latency from the
        validation residuals of the profile's trust class (kvsim.intervals)."""
        from .intervals import interval
        return interval(self.latency_s, self.hw.trust_class, self.hw.name)

    @property
    def interval_class(self) -> str:
        """The residuals the interval comes from: the profile's trust class, or the nearest wider
        class that has residuals (kvsim.intervals.quantiles)."""
        from .intervals import quantiles
        return quantiles(self.hw.trust_class, self.hw.name)[2]

    @property
    def tokens_per_s(self):
        return self.workload.batch / self.latency_s

    @property
    def flops(self):
        return self.cost.flops

    @property
    def hbm_bytes(self):
        return self.cost.hbm_bytes

    @property
    def pcie_bytes(self):
        return self.cost.pcie_bytes

    @property
    def memory_bytes(self):
        """GPU resident during this step: weights + KV on GPU + activations + workspace."""
        return self.cost.gpu_bytes

    @property
    def host_memory_bytes(self):
        return self.cost.host_resident_bytes

    @property
    def kv_bytes(self):
        return self.cost.kv_bytes

    @property
    def gpu_capacity_bytes(self) -> float:
        return self.hw.memory.capacity_bytes.value

    @property
    def host_capacity_bytes(self) -> float:
        return host_capacity(self.hw)

    @property
    def prefill_scratch_bytes(self):
        """What the prompt's prefill holds beside the preallocated cache (Method.prefill_scratch)."""
        return self.method.prefill_scratch(self.model.sharded(self.gpus), self.workload)

    @property
    def peak_gpu_bytes(self):
        """The step's memory, or the prefill's where larger: the cache is allocated first, then
        the prompt is written one layer at a time beside it."""
        if self.generation:
            return self.generation.peak_gpu_bytes
        return self.memory_bytes + self.prefill_scratch_bytes

    @property
    def peak_host_bytes(self):
        return self.generation.peak_host_bytes if self.generation else self.host_memory_bytes

    @property
    def fits(self):
        return fits_memory(self.hw, self.peak_gpu_bytes, self.peak_host_bytes)

    @property
    def engine(self) -> str:
        return self.timing.engine

    def attention(self) -> dict:
        """The attention ops alone (``kvsim.methods.attention`` says what they cover), run as
        the step runs them: back to back in a graph replay of their own, or issued eagerly on their own."""
        attn = self.cost.attention()
        if self.engine == "graphs":
            latency = sum((t.time_s for t in self.timing.ops if t.op.kind == "attention"),
                          np.asarray(graph_replay_time(self.hw)))
        else:
            latency = step_time(attn, self.hw, self.engine, self.model.n_layers).latency_s
        return {"flops": attn.flops, "hbm_bytes": attn.hbm_bytes, "pcie_bytes": attn.pcie_bytes,
                "latency_s": latency}

    def fit_message(self) -> str:
        """One line on what does not fit ("" when everything fits), for scalar predictions."""
        return fit_message(self.hw, self.peak_gpu_bytes, self.peak_host_bytes)


def host_capacity(hw: HardwareProfile) -> float:
    return hw.host.memory_bytes.value if hw.host is not None else 0.0


def fits_memory(hw: HardwareProfile, gpu_bytes, host_bytes):
    """Whether a step holding ``gpu_bytes`` per GPU and ``host_bytes`` of host memory fits."""
    host_ok = (host_bytes <= host_capacity(hw)) | (host_bytes == 0)
    return (gpu_bytes <= hw.memory.capacity_bytes.value) & host_ok


def fit_message(hw: HardwareProfile, gpu_bytes, host_bytes) -> str:
    """One line on what does not fit ("" when everything fits), from the largest need."""
    need, have = float(np.max(gpu_bytes)), hw.memory.capacity_bytes.value
    if need > have:
        return (f"does not fit: needs {format_bytes(need)} of GPU memory, "
                f"{hw.name} has {format_bytes(have)}")
    host, host_have = float(np.max(host_bytes)), host_capacity(hw)
    if host > 0 and host > host_have:
        return (f"does not fit: needs {format_bytes(host)} of host memory, "
                f"{hw.name}'s host has {format_bytes(host_have)}")
    return ""


def step_cost(method: Method, model: ModelConfig, hw: HardwareProfile, wl: Workload,
              gpus: int = 1, prefill: bool = False, offload: float = 0.0) -> Cost:
    """The cost on one of ``gpus`` tensor-parallel GPUs: the sharded model plus the collectives,
    plus, for decode with ``offload`` > 0, the host-resident KV's transfers (kvsim.offload)."""
    shard = model.sharded(gpus)
    if prefill:
        return method.prefill_cost(shard, hw, wl) + Cost(tuple(tensor_parallel_ops(model, wl, gpus, wl.seq)))
    tokens = method.tokens_through_layers(shard, wl)
    collectives = tensor_parallel_ops(model, wl, gpus, tokens) + (method.tp_ops(model, wl, gpus) if gpus > 1 else [])
    cost = method.cost(shard, hw, wl) + Cost(tuple(collectives))
    return cost + offload_cost(method, shard, wl, offload) if offload > 0 else cost


def decode_steps(gen: int, exact_steps: int = EXACT_GENERATION_STEPS, samples: int = SAMPLED_STEPS):
    """The steps 1..gen whose latency is evaluated: all of them up to ``exact_steps``, beyond
    that ``samples`` evenly spaced ones (first and last included)."""
    if gen <= exact_steps:
        return np.arange(1, gen + 1, dtype=float)
    return np.unique(np.round(np.linspace(1, gen, samples)))


def decode_total(per_step: np.ndarray, steps: np.ndarray, gen: int):
    """Sum of the latencies of steps 1..gen (last axis): exact when every step was evaluated,
    else the trapezoidal rule over the sampled steps plus half of the end steps (the
    Euler-Maclaurin end correction: exact where latency is linear in the step)."""
    if steps.size == gen:
        return per_step.sum(axis=-1)
    return np.trapezoid(per_step, steps, axis=-1) + (per_step[..., 0] + per_step[..., -1]) / 2


def generation(method: Method, model: ModelConfig, hw: HardwareProfile, wl: Workload, gpus: int,
               offload: float = 0.0, exact_steps: int = EXACT_GENERATION_STEPS,
               samples: int = SAMPLED_STEPS, engine: str = "graphs") -> Generation:
    """Prefill of ``wl.seq``-token prompts, then ``wl.gen`` decode steps (``decode_steps``)."""
    prompt, batch = np.broadcast_arrays(wl.seq, wl.batch)
    prefill = step_time(step_cost(method, model, hw, wl, gpus, prefill=True), hw, engine, model.n_layers)
    n = wl.gen
    steps = decode_steps(n, exact_steps, samples)
    decode_wl = wl.with_(seq=prompt[..., None] + steps, batch=batch[..., None])
    cost = step_cost(method, model, hw, decode_wl, gpus, offload=offload)
    per_step = step_time(cost, hw, engine, model.n_layers).latency_s * np.ones_like(decode_wl.seq)
    decode_s = decode_total(per_step, steps, n)
    total = prefill.latency_s + decode_s
    last = wl.with_(seq=prompt + n, batch=batch)
    final = step_cost(method, model, hw, last, gpus, offload=offload)
    return Generation(ttft_s=prefill.latency_s, decode_s=decode_s, total_s=total,
                      tokens_per_s=batch * n / total,
                      peak_gpu_bytes=final.gpu_bytes + method.prefill_scratch(model.sharded(gpus), wl),
                      peak_host_bytes=final.host_resident_bytes, prefill=prefill)


def check_hardware(hw: HardwareProfile, dtype: str, gpus: int) -> None:
    """What the profile cannot run: tensor parallelism without an interconnect between its
    devices, or on a GPU a weight dtype its datasheet lists no peak for (V100 has no bf16/fp8)."""
    if gpus > 1 and hw.interconnect is None:
        raise KvsimError(f"{hw.name} has no interconnect between devices in its profile, so --gpus must be 1 "
                         f"(got {gpus})")
    if hw.kind == "gpu" and dtype not in hw.compute.peak_flops:
        raise KvsimError(f"{hw.name} lists no {dtype} peak FLOP/s (it has "
                         f"{', '.join(sorted(hw.compute.peak_flops))}); choose another --dtype")


def predict(hw, method="dense", seq=4096, batch=1, model=DEFAULT_MODEL, gen: int = 0,
            dtype: str | None = None, kv_dtype: str | None = None, gpus: int = 1,
            offload: float = 0.0, engine: str = "graphs", **params) -> Prediction:
    """Cost and latency of one decode step of ``batch`` sequences at context ``seq`` (arrays
    broadcast), and with ``gen`` > 0 of prefill plus ``gen`` generated tokens. With ``gpus`` > 1
    the model is split by tensor parallelism; bytes, memory and fit are per GPU. ``offload``:
    the oldest fraction of the KV cache sits in host memory (kvsim.offload). ``engine``: how the
    step is run, "graphs" (CUDA-graph replay) or "eager" (kvsim.roofline)."""
    hw, model = load_profile(hw), load_model(model)
    if not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise KvsimError(f"gpus must be a positive whole number, got {gpus!r}")
    check_gpus(hw, int(gpus))  # a CPU, no interconnect, or more GPUs than one node holds
    dtype = dtype or hw.preferred_dtype
    wl = Workload(seq=seq, batch=batch, gen=gen, dtype=dtype, kv_dtype=kv_dtype or dtype)
    method = get_method(method, params)
    offload = check_fraction(method, offload)
    if offload > 0:
        require_host_link(hw, "offload")
    check_hardware(hw, dtype, gpus)
    cost = step_cost(method, model, hw, wl, gpus, offload=offload)
    request = generation(method, model, hw, wl, gpus, offload, engine=engine) if gen > 0 else None
    timing = step_time(cost, hw, engine, model.n_layers)
    return Prediction(hw, model, method, wl, cost, timing, request, gpus, offload)
