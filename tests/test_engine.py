"""The eager engine: host issue and GPU streams (kvsim.roofline), and each method's host calls
in the cost model against what the reference runtime issues, counted under the Triton
interpreter (runtime/measure.py LaunchCounter), on small shapes."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

import numpy as np
import pytest

from kvsim.cost import Cost, Op
from kvsim.errors import KvsimError
from kvsim.hardware import load_profile
from kvsim.models import ModelConfig
from kvsim.predict import predict
from kvsim.roofline import step_time

SMALL = ModelConfig(name="tiny-llama", family="llama", n_layers=4, d_model=256, n_heads=8, n_kv_heads=2,
                    head_dim=32, ffn_dim=512, vocab=1000, max_context=4096, mlp="swiglu", norm="rmsnorm",
                    source="test")
BATCH, PREFILL, MAX_SEQ = 2, 70, 96
# budgets below the context, so every method runs its selection, eviction or release path
PARAMS = {"dense": {}, "streamingllm": {"sink": 4, "recent": 20}, "h2o": {"heavy": 16, "recent": 16},
          "adore": {"m": 40, "R": 3}, "tidaldecode": {"k": 16, "reselect_layer": 3},
          "sparq": {"k": 24, "r": 8, "local": 4}, "quest": {"budget": 32, "page_size": 8},
          "alisa": {}, "duoattention": {"sink": 4, "recent": 16}}
KINDS = {"torch": "torch_calls", "torch_host": "torch_host_calls", "triton": "triton_launches", "sync": "host_syncs"}


def runtime_counts(method: str) -> tuple[dict, dict]:
    """What the runtime's step and attention-only step issue, Triton kernels forced on CPU."""
    from runtime import ops
    from runtime.engine import Engine
    from runtime.measure import count_launches
    cuda_attr = ops._kernel_attr
    ops._kernel_attr = lambda module, name, device_type: cuda_attr(module, name, "cuda")
    ops.reset()
    try:
        engine = Engine(SMALL, method, PARAMS[method], batch=BATCH, max_seq=MAX_SEQ, device="cpu", dtype="bf16")
        engine.prefill_synthetic(PREFILL)
        engine.attention_only_step(), engine.step()  # warm, as measure() times them
        attention = count_launches(engine.attention_only_step)
        step = count_launches(engine.step)
    finally:
        ops._kernel_attr = cuda_attr
        ops.reset()
    return step, attention


def model_counts(cost: Cost) -> dict:
    return {kind: float(cost.total(field)) for kind, field in KINDS.items()}


def attention_only_extra(method: str) -> dict:
    """Calls the runtime's attention-only step makes that no decode step does: the context
    length tensor at a context not seen yet (≤ 1 torch call); ADORE's zero chunk inputs (two
    torch calls, two views) and its last row taken per layer (a view)."""
    if method == "adore":
        return {"torch": (2, 3), "torch_host": (2 + SMALL.n_layers, 2 + SMALL.n_layers)}
    return {"torch": (0, 1)}


@pytest.mark.parametrize("method", list(PARAMS))
def test_host_calls_match_the_runtime(method):
    step, attention = runtime_counts(method)
    pred = predict("h100-sxm", method, seq=PREFILL + 2, batch=BATCH, model=SMALL, dtype="bf16", **PARAMS[method])
    modelled = model_counts(pred.cost)
    for kind, count in step.items():  # Quest's page-metadata calls are an average over a page
        assert abs(modelled[kind] - count) < 1, (kind, modelled[kind], count)
    modelled = model_counts(pred.cost.attention())
    extra = attention_only_extra(method)
    for kind, count in attention.items():
        low, high = extra.get(kind, (0, 0))
        assert low <= count - modelled[kind] <= high, (kind, modelled[kind], count)
