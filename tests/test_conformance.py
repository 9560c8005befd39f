"""Conformance: every method in the registry, through its spec, held to the same laws — a new
method is tested the day it is registered. Per-method hand formulas stay in test_methods_*.py.

Laws (tests/conformance_laws.py): bytes, FLOPs, memory and time never fall with context or batch;
attention costs at most dense plus the overhead the spec declares; totals are sums of ops; at the
spec's full budget the cost model attends to every row and the runtime (CPU, Triton interpreter)
gives dense's output; parameters round-trip; bad parameters give one-line errors.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from conformance_laws import law_full_budget, law_monotone, law_overhead, law_totals
from kvsim.errors import KvsimError
from kvsim.methods import REGISTRY, get_method, spec_of
from kvsim.models import load_model

NAMES = list(REGISTRY)
MODELS = ["llama-3.1-8b", "llama-2-7b"]
BUDGETS = ["default", "small"]


def method(name: str, budget: str = "default"):
    return get_method(name, spec_of(name).small_budget if budget == "small" else {})


contexts = st.integers(min_value=4096, max_value=300_000)
batches = st.integers(min_value=1, max_value=32)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(model=st.sampled_from(MODELS), s1=contexts, s2=contexts, b1=batches, b2=batches)
def test_never_falls_with_context_or_batch(name, budget, model, s1, s2, b1, b2):
    law_monotone(method(name, budget), model, [s1, s2], [b1, b2])


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(model=st.sampled_from(MODELS), seq=contexts, batch=batches)
def test_at_most_dense_plus_declared_overhead(name, budget, model, seq, batch):
    law_overhead(method(name, budget), model, seq, batch)


@pytest.mark.parametrize("name", NAMES)
def test_totals_are_sums_of_ops(name):
    law_totals(method(name), "llama-3.1-8b", [4096, 65536], [1, 16])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_full_budget_attends_every_row(name, model):
    for seq in (4096, 32768):
        full = spec_of(name).full_budget(load_model(model), seq)
        law_full_budget(get_method(name, full), model, seq, 2)


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name):
    spec = spec_of(name)
    for params in ({}, spec.small_budget, spec.full_budget(load_model("llama-3.1-8b"), 8192)):
        made = spec.from_params(params)
        assert spec.from_params(made.model_dump(exclude_none=True)) == made
        assert get_method(name, made.model_dump()).model_dump() == made.model_dump()
        values = made.resolved(load_model("llama-3.1-8b"), 8192)
        assert set(values) == set(spec.model_fields) and None not in values.values()
        assert spec.from_params(values).resolved(load_model("llama-3.1-8b"), 8192) == values


@pytest.mark.parametrize("name", NAMES)
def test_bad_params_one_line(name):
    spec = spec_of(name)
    bad = [{"bogus": 1}] + [{field: "not-a-number"} for field in spec.model_fields]
    for params in bad:
        with pytest.raises(KvsimError) as err:
            get_method(name, params)
        assert "\n" not in str(err.value) and name in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_declared(name):
    spec = spec_of(name)
    assert spec.name == name and spec.paper and spec.summary
    assert set(spec.kv_dtypes) <= {"same", "int8"} and "same" in spec.kv_dtypes
    assert hasattr(get_method(name), "host_rows_read") == spec.offload  # the cost model's offload rows


@pytest.mark.parametrize("name", [n for n in NAMES if n != "dense"])
def test_runtime_full_budget_equals_dense(name):
    """The runtime at the spec's full budget decodes exactly as dense does (CPU, fp32; the
    kernels under the Triton interpreter where the runtime uses them)."""
    torch = pytest.importorskip("torch")
    from test_runtime import MAX_SEQ, TINY, engine
    full = spec_of(name).full_budget(TINY, MAX_SEQ)
    got, want = engine(name, full), engine("dense")
    for t in range(3):
        tokens = torch.tensor([t, t + 1])
        torch.testing.assert_close(got.step(tokens), want.step(tokens), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.attention_only_step(), want.attention_only_step(), rtol=1e-4, atol=1e-4)
