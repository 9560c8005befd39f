"""kvsim.host_fit: the eager engine's host costs identified from benchmarks/bench_host.py's bursts."""
import numpy as np
import pytest


def test_host_fit_identifies_each_kind_from_its_own_bursts():
    """Synthetic bench_host records made from known costs at two host clocks give the costs back
    (at the run's median clock), the Triton argument slope apart from the launch, and the
    runtime's per-call Python from what the bare costs leave."""
    from kvsim.host_fit import host_fit, profile_fields
    true = {"torch": 7e-6, "torch_gemm": 18e-6, "torch_host": 2e-6, "triton": 9e-6, "triton_arg": 0.6e-6,
            "sync": 8e-6, "python_torch": 10e-6, "python_triton": 16e-6}
    records = [{"kind": "host call", "call": k, "args": 0, "host_s": true[k] * p, "probe_s": p}
               for k in ("torch", "torch_gemm", "torch_host") for p in (1.0, 1.0, 2.0)]
    records += [{"kind": "host call", "call": "sync", "args": 0, "host_s": (true["sync"] + true["torch"]) * p,
                 "probe_s": p} for p in (1.0, 1.0, 2.0)]
    records += [{"kind": "host call", "call": "triton", "args": n, "host_s": (true["triton"] + true["triton_arg"] * n),
                 "probe_s": 1.0} for n in (2, 8, 16, 32, 48)]
    for torch_calls, triton in ((113, 16), (13, 12), (160, 22)):  # steps issue mostly torch calls
        counts = {"torch": torch_calls - 60, "torch_gemm": 17, "torch_host": 43, "triton": triton,
                  "triton_args": 25 * triton, "sync": 0}
        host = sum(counts[k] * true[k] for k in ("torch", "torch_gemm", "torch_host", "triton"))
        host += torch_calls * true["python_torch"] + triton * (true["python_triton"] + 25 * true["triton_arg"])
        records.append({"kind": "runtime launch", "counts": counts, "host_s": 1.3 * host, "probe_s": 1.3})
    cost = host_fit(records)
    for key, value in true.items():
        assert cost[key] == pytest.approx(value, rel=1e-6), key
    assert cost["probe"] == 1.0 and cost["residuals"] == [pytest.approx(0.0, abs=1e-9)] * 3
    fields = profile_fields(cost, "test run")
    assert set(fields["host.launch_s"]) == {"torch", "torch_gemm", "torch_host", "triton"}
    assert fields["host.python_s"]["triton"]["value"] == pytest.approx(16e-6) and "test run" in fields["host.probe_s"]["source"]


def test_the_python_fit_never_gives_time_back():
    """A remainder that falls with Triton launches gives them 0 s, not a negative cost."""
    from kvsim.host_fit import _nonnegative
    a = np.array([[10.0, 1.0], [20.0, 3.0], [30.0, 2.0]])
    b = a @ np.array([2.0, -1.0])
    x = _nonnegative(a, b)
    assert x[1] == 0.0 and x[0] > 0
    assert _nonnegative(a, a @ np.array([2.0, 1.0])) == pytest.approx((2.0, 1.0))
