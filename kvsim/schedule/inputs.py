"""What a schedule needs to know, per generation step, before any plan is chosen.

Steps are j = 0 (prefill of the P-token prompt) and j = 1..G (decode; the cache holds
n_j = P + j tokens, the new one included, as in ``kvsim.predict``). Every array has G + 1 entries.
The method's own Cost (``kvsim.predict.step_cost``, all KV on the GPU) gives the GPU compute and
HBM time per step; the schedule adds its transfers and recomputation on top (``ops.py``).

Per-token byte counts, summed over layers L and the batch B:
  rho  KV of one token:        L·B·H_kv·row   (row = 2·d·b_kv, + 4 B scale/zero per row for int8)
  eta  layer inputs of a token: L·B·D·b_a     (what recomputing its K and V starts from)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoder import activation_bytes, weight_bytes
from ..errors import KvsimError
from ..hardware import HardwareProfile
from ..methods import Method
from ..models import ModelConfig
from ..offload import require_host_link
from ..predict import step_cost
from ..roofline import step_time
from ..workload import Workload

MAX_GEN = 2 ** 20  # steps one schedule plans (its per-step arrays took 9 GB at 16M steps)


@dataclass(frozen=True)
class StepInputs:
    method: Method
    model: ModelConfig
    hw: HardwareProfile
    wl: Workload  # scalar batch, KV dtype as the method uses it
    prompt: int
    gen: int
    n: np.ndarray  # tokens in the cache at step j (held rows; = P + j for methods keeping all)
    recent: np.ndarray  # most recent tokens, always selected and always on the GPU (>= 1)
    global_sel: np.ndarray  # further rows read per sequence and layer, chosen among older tokens
    compute_s: np.ndarray  # the method's compute stream (all KV on the GPU)
    copy_s: np.ndarray  # the method's own copy stream
    fixed_gpu: np.ndarray  # activations + workspace + the method's other GPU residents
    meta_gpu: np.ndarray  # the method's KV metadata beyond rows (ALISA: n·4 B scores per layer)
    host_resident: np.ndarray  # the method's own host residents
    rho: float
    eta: float
    weights: float  # all weights, b_w per parameter (+ norms)
    layer_weights: float  # one layer's weights
    gpu_capacity: float
    cpu_capacity: float
    prefetchable: bool
    engine: str = "graphs"  # how steps are issued: the schedule's own ops add host time when "eager"

    @property
    def selects(self) -> bool:
        """Whether the method picks the rows it reads (``_selection``)."""
        return _selects(self.method)

    @property
    def batch(self) -> int:
        return int(self.wl.batch)

    @property
    def steps(self) -> int:
        return self.gen + 1

    @property
    def decode_tokens(self) -> float:
        return float(self.batch * self.gen)


def _selects(method: Method) -> bool:
    return hasattr(method, "selected_tokens") and hasattr(method, "local_tokens")


def _selection(method: Method, context: np.ndarray, held: np.ndarray):
    """(recent, global) rows per sequence and layer. Methods exposing ``local_tokens`` and
    ``selected_tokens`` (ALISA: local = last k, selected = 2k) say it; any other method is taken
    to read every held row, of which only the new token is sure to be on the GPU."""
    if _selects(method):
        recent = np.maximum(np.minimum(method.local_tokens(context), held), 1.0)
        chosen = np.minimum(method.selected_tokens(context), held)
    else:
        recent, chosen = np.ones_like(held), held
    return recent, np.maximum(chosen - recent, 0.0)


def prefill_held(method: Method, model: ModelConfig, wl: Workload, sequences) -> np.ndarray:
    """GPU bytes a prefill pass over ``sequences`` of the batch's ``wl.batch`` (arrays allowed)
    holds beside the cache: the P-row activations of the widest layer (decoder.activation_bytes),
    the layer's prompt keys and values while it writes them (Method.prefill_scratch), and the
    fp32 logits the passes before it kept for the other sequences, (B − sequences)·V·4 B."""
    part = wl.with_(batch=sequences)
    return (activation_bytes(model, part, tokens=wl.seq) + method.prefill_scratch(model, part)
            + (wl.batch - np.asarray(sequences, dtype=float)) * model.vocab * 4.0)


def step_inputs(method: Method, model: ModelConfig, hw: HardwareProfile, batch: int, prompt: int,
                gen: int, dtype: str, kv_dtype: str, engine: str = "graphs") -> StepInputs:
    """``engine``: how the method's own step is timed (kvsim.roofline.ENGINES): CUDA-graph
    replay (plans), or issued eagerly from the host (to compare with an eager-timed run)."""
    require_host_link(hw, "schedule")
    if not 1 <= gen <= MAX_GEN:
        raise KvsimError(f"schedule: --gen must be 1 to {MAX_GEN} tokens (every step is planned), got {gen}")
    wl = method.kv_workload(Workload(seq=prompt, batch=batch, gen=gen, dtype=dtype, kv_dtype=kv_dtype))
    context = prompt + np.arange(gen + 1, dtype=float)
    decode = step_cost(method, model, hw, wl.with_(seq=context[1:]))
    prefill = step_cost(method, model, hw, wl, prefill=True)
    decode_t, prefill_t = (step_time(c, hw, engine, model.n_layers) for c in (decode, prefill))
    rho = model.n_layers * batch * model.n_kv_heads * method.row_bytes(model, wl)
    kv = np.concatenate([[float(prefill.resident_total("gpu", True) + prefill.resident_total("host", True))],
                         decode.resident_total("gpu", True) + decode.resident_total("host", True)])
    held = np.minimum(context, kv / rho)  # bounded caches (StreamingLLM, H2O) hold fewer rows
    recent, global_sel = _selection(method, context, held)
    global_sel[0] = 0.0  # prefill attends to the prompt it has just computed: nothing to load
    weights = weight_bytes(model, wl)
    other = decode.resident_total("gpu") - decode.resident_total("gpu", True) - weights
    first = float(prefill_held(method, model, wl, batch)) + hw.workspace_bytes.value
    return StepInputs(
        method=method, model=model, hw=hw, wl=wl, prompt=prompt, gen=gen, n=held, recent=recent,
        global_sel=global_sel,
        compute_s=np.concatenate([[float(prefill_t.compute_stream_s)], decode_t.compute_stream_s * np.ones(gen)]),
        copy_s=np.concatenate([[float(prefill_t.copy_stream_s)], decode_t.copy_stream_s * np.ones(gen)]),
        fixed_gpu=np.concatenate([[float(first)], other * np.ones(gen)]),
        meta_gpu=np.maximum(kv - rho * context, 0.0),
        host_resident=np.concatenate([[float(prefill.resident_total("host"))],
                                      decode.resident_total("host") * np.ones(gen)]),
        rho=float(rho), eta=float(model.n_layers * batch * model.d_model * wl.b_a),
        weights=float(weights), layer_weights=float(model.layer_params * wl.b_w),
        gpu_capacity=hw.memory.capacity_bytes.value,
        cpu_capacity=hw.host.memory_bytes.value if hw.host else 0.0,
        prefetchable=method.prefetchable, engine=engine)
