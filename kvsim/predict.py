"""The public entry: predict(hw, model, method, ...) -> Prediction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .cost import Cost
from .decoder import tensor_parallel_ops
from .errors import KvsimError
from .hardware import HardwareProfile, load_profile
from .methods import Method, get_method
from .models import DEFAULT_MODEL, ModelConfig, load_model
from .offload import check_fraction, offload_cost
from .roofline import StepTime, step_time
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
        return interval(self.latency_s, self.hw.trust_class)

    @property
    def interval_class(self) -> str:
        """The residuals the interval comes from: the profile's trust class, or the nearest wider
        class that has residuals (kvsim.intervals.quantiles)."""
        from .intervals import quantiles
        return quantiles(self.hw.trust_class)[2]

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
        if self.hw.host is None:
            return 0.0
        return self.hw.host.memory_bytes.value

    @property
    def peak_gpu_bytes(self):
        return self.generation.peak_gpu_bytes if self.generation else self.memory_bytes

    @property
    def peak_host_bytes(self):
        return self.generation.peak_host_bytes if self.generation else self.host_memory_bytes

    @property
    def fits(self):
        host_ok = (self.peak_host_bytes <= self.host_capacity_bytes) | (self.peak_host_bytes == 0)
        return (self.peak_gpu_bytes <= self.gpu_capacity_bytes) & host_ok

    def attention(self) -> dict:
        timed = [t for t in self.timing.ops if t.op.kind == "attention"]
        attn = self.cost.attention()
        return {"flops": attn.flops, "hbm_bytes": attn.hbm_bytes, "pcie_bytes": attn.pcie_bytes,
                "latency_s": sum((t.time_s for t in timed), np.asarray(0.0))}

    def fit_message(self) -> str:
        """One line on what does not fit ("" when everything fits), for scalar predictions."""
        need, have = float(np.max(self.peak_gpu_bytes)), self.gpu_capacity_bytes
        if need > have:
            return (f"does not fit: needs {format_bytes(need)} of GPU memory, "
                    f"{self.hw.name} has {format_bytes(have)}")
        host = float(np.max(self.peak_host_bytes))
        if host > 0 and host > self.host_capacity_bytes:
            return (f"does not fit: needs {format_bytes(host)} of host memory, "
                    f"{self.hw.name}'s host has {format_bytes(self.host_capacity_bytes)}")
        return ""


def step_cost(method: Method, model: ModelConfig, hw: HardwareProfile, wl: Workload,
              gpus: int = 1, prefill: bool = False, offload: float = 0.0) -> Cost:
    """The cost on one of ``gpus`` tensor-parallel GPUs: the sharded model plus the collectives,
    plus, for decode with ``offload`` > 0, the host-resident KV's transfers (kvsim.offload)."""
    shard = model.sharded(gpus)
    if prefill:
        return method.prefill_cost(shard, hw, wl) + Cost(tuple(tensor_parallel_ops(model, wl, gpus, wl.seq)))
    tokens = method.tokens_through_layers(shard, wl)
    cost = method.cost(shard, hw, wl) + Cost(tuple(tensor_parallel_ops(model, wl, gpus, tokens)))
    return cost + offload_cost(method, shard, wl, offload) if offload > 0 else cost


def _generation(method: Method, model: ModelConfig, hw: HardwareProfile, wl: Workload,
                gpus: int, offload: float = 0.0) -> Generation:
    prompt, batch = np.broadcast_arrays(wl.seq, wl.batch)
    prefill = step_time(step_cost(method, model, hw, wl, gpus, prefill=True), hw)
    n = wl.gen
    steps = np.arange(1, n + 1, dtype=float)
    if n > EXACT_GENERATION_STEPS:
        steps = np.unique(np.round(np.linspace(1, n, SAMPLED_STEPS)))
    decode_wl = wl.with_(seq=prompt[..., None] + steps, batch=batch[..., None])
    cost = step_cost(method, model, hw, decode_wl, gpus, offload=offload)
    per_step = step_time(cost, hw).latency_s * np.ones_like(decode_wl.seq)
    decode_s = per_step.sum(axis=-1) if n <= EXACT_GENERATION_STEPS else np.trapezoid(per_step, steps, axis=-1) + per_step[..., 0]
    total = prefill.latency_s + decode_s
    last = wl.with_(seq=prompt + n, batch=batch)
    final = step_cost(method, model, hw, last, gpus, offload=offload)
    return Generation(ttft_s=prefill.latency_s, decode_s=decode_s, total_s=total,
                      tokens_per_s=batch * n / total, peak_gpu_bytes=final.gpu_bytes,
                      peak_host_bytes=final.host_resident_bytes, prefill=prefill)


def predict(hw, method="dense", seq=4096, batch=1, model=DEFAULT_MODEL, gen: int = 0,
            dtype: str | None = None, kv_dtype: str | None = None, gpus: int = 1,
            offload: float = 0.0, **params) -> Prediction:
    """Cost and latency of one decode step of ``batch`` sequences at context ``seq`` (arrays
    broadcast), and with ``gen`` > 0 of prefill plus ``gen`` generated tokens. With ``gpus`` > 1
    the model is split by tensor parallelism; bytes, memory and fit are per GPU. ``offload``:
    the oldest fraction of the KV cache sits in host memory (kvsim.offload)."""
    hw, model = load_profile(hw), load_model(model)
    if not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise KvsimError(f"gpus must be a positive whole number, got {gpus!r}")
    dtype = dtype or hw.preferred_dtype
    wl = Workload(seq=seq, batch=batch, gen=gen, dtype=dtype, kv_dtype=kv_dtype or dtype)
    method = get_method(method, params)
    offload = check_fraction(method, offload)
    cost = step_cost(method, model, hw, wl, gpus, offload=offload)
    generation = _generation(method, model, hw, wl, gpus, offload) if gen > 0 else None
    return Prediction(hw, model, method, wl, cost, step_time(cost, hw), generation, gpus, offload)
