"""Offloaded decode steps captured in a CUDA graph (runtime/offload.py forks its copy stream
from the captured stream and joins it within the step): a replay must move the host rows again.
The host rows are zeroed after the capture; a replay that still read the block fetched at
capture time (copies not in the graph) would disagree with the eager step on the zeroed rows.
Skipped without CUDA; run on its own: ``pytest tests/gpu``."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from kvsim.runtime.engine import Engine  # noqa: E402

MODEL, LAYERS, B, PREFILL, MAX_SEQ = "llama-3.1-8b", 3, 2, 2000, 2100
CASES = [("dense", {}), ("sparq", {"k": 256}), ("quest", {"budget": 512}), ("alisa", {}),
         ("tidaldecode", {"k": 256, "reselect_layer": 2})]


def _engine(method, params, fraction):
    e = Engine(MODEL, method, params, batch=B, max_seq=MAX_SEQ, n_layers=LAYERS, device="cuda", offload=fraction)
    e.prefill_synthetic(PREFILL)
    return e


def _zero_host_rows(e):
    for store in e.method.kv.layers:
        for host in store.host.values():
            host.zero_()


@pytest.mark.parametrize("method,params", CASES)
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_replayed_offloaded_step_fetches_the_host_rows_again(method, params, fraction):
    tokens = torch.tensor([5, 9], device="cuda")
    eager = _engine(method, params, fraction)
    eager.step(tokens)
    torch.cuda.synchronize()
    _zero_host_rows(eager)
    want = eager.step(tokens).clone()
    graphed = _engine(method, params, fraction)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the eager first step, as torch.cuda.graphs warms up
        graphed.step(tokens)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = graphed.step(tokens)
    torch.cuda.synchronize()
    _zero_host_rows(graphed)
    graph.replay()
    torch.cuda.synchronize()
    assert ((out.float() - want.float()).norm() / want.float().norm()).item() < 0.02
