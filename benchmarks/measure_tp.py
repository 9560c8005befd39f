"""Tensor-parallel decode steps on N GPUs of one host (issue 18): every method's step latency and
per-GPU peak memory on the reference runtime (runtime/tp.py), one process per GPU over NCCL.

    python3 benchmarks/measure_tp.py --gpus 2 --out $OUT/h200-tp.jsonl --budget-s 170
    python3 benchmarks/measure_tp.py --gpus 2 --device cpu --model tiny.yaml ...   # gloo smoke run

Grid: context x batch x method (method innermost, so a budget-stopped run covers every method
at the first contexts), the model cut to --layers layers. Timing as runtime/measure.py: per rank,
CUDA events around each call after a write of 4x L2; ``warmup`` untimed steps, ``steps`` eager
timed ones, then CUDA-graph replays of one captured step and attention-only call when every
rank could capture them (NCCL collectives are captured with the kernels). A step's time is the
slowest rank's (ranks meet at every all-reduce); ``latency_s`` the median over steps of it, the
graph replays' where captured. Memory: each rank's torch.cuda.max_memory_allocated over one
step; ``memory_bytes`` the largest. Records carry ``gpus``, ``nvidia-smi topo -m`` and the NCCL
version and multicast settings. Configurations kvsim predicts above 90% of a GPU are skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.runtime.tp_env import disable_multicast  # noqa: E402  (no torch import)

disable_multicast()  # before anything can start a process group; spawned children inherit it

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from kvsim.runtime.sweep_process import cut_model_params  # noqa: E402
from kvsim.commands.measure import _driver, profile_for  # noqa: E402
from kvsim.methods import METHODS  # noqa: E402
from kvsim.models import load_model  # noqa: E402
from kvsim.predict import predict  # noqa: E402
from kvsim.records import append_jsonl, read_jsonl  # noqa: E402
from kvsim.runtime.tp_record import record_of  # noqa: E402


def grid(args):
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    for seq in map(int, args.seqs.split(",")):
        for batch in map(int, args.batches.split(",")):
            for method in methods:
                yield {"method": method, "seq": seq, "batch": batch, "params": cut_model_params(method, args.layers)}


def key(method, model, seq, batch, layers, gpus) -> tuple:
    return (method, model, int(seq), int(batch), layers, int(gpus or 1))


def done_keys(paths) -> set:
    """Configurations (gpus included) already measured in ``paths``."""
    return {key(r["method"], r["model"], r["seq"], r["batch"], r.get("n_layers"), r.get("gpus"))
            for path in paths if os.path.exists(path) for r in read_jsonl(path) if r.get("source") == "measured"}


def fits(config, args, hw) -> bool:
    """kvsim's per-GPU memory at ``gpus`` within 90% of the device (no profile: CPU, run it)."""
    if hw is None:
        return True
    model = load_model(args.model).model_copy(update={"n_layers": args.layers})
    pred = predict(hw, method=config["method"], seq=config["seq"], batch=config["batch"], model=model,
                   gpus=args.gpus, **config["params"])
    return float(pred.memory_bytes) <= 0.9 * pred.gpu_capacity_bytes


def graph_times(engine, comm, steps: int, flush: bool) -> tuple[list, str, dict]:
    """Replay times [attention, step, ...] of captured graphs when every rank captured both."""
    from kvsim.kernels._common import capture_graph
    from kvsim.runtime.measure import replay_times
    if engine.device.type != "cuda":
        return [], "no CUDA", {}
    gen = torch.Generator(device=engine.device).manual_seed(7)  # the same token ids on every rank
    tokens = torch.randint(engine.cfg.vocab, (engine.batch,), generator=gen, device=engine.device)
    torch.cuda.empty_cache()
    why = ""
    try:
        attention = capture_graph(engine.attention_only_step, error_mode="thread_local")
        contexts = {"attention": engine.length + 1}
        step = capture_graph(lambda: engine.step(tokens), error_mode="thread_local")
        contexts["step"] = engine.length
    except Exception as exc:  # noqa: BLE001 - the reason goes into the record
        why = f"not capturable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    torch.cuda.synchronize()
    captured = torch.tensor([0 if why else 1], device=engine.device)
    comm.all_reduce(captured)
    if int(captured) < comm.world:
        return [], why or "not capturable on another rank", {}
    return replay_times(engine.device, attention, step, steps, flush), "cuda graph replay", contexts


def run_config(config, args, comm, device) -> dict:
    """This rank's timings and memory for one configuration."""
    from kvsim.runtime.measure import _peak_memory, _time_steps
    from kvsim.runtime.tp import TPEngine
    extra = args.warmup + args.steps // 2
    prefill = max(1, config["seq"] - 1 - extra)
    engine = TPEngine(args.model, config["method"], config["params"], batch=config["batch"],
                      max_seq=prefill + extra * 2 + 64, n_layers=args.layers, device=device, comm=comm)
    engine.prefill_synthetic(prefill, context=config["seq"])
    first = engine.length + args.warmup + 1
    cuda = device == "cuda"
    eager, _, _ = _time_steps(engine, args.steps, args.warmup, flush_l2=cuda)
    memory, memory_how = _peak_memory(engine)
    graphed, how, replayed = graph_times(engine, comm, args.steps, flush=cuda) if args.graphs else ([], "not asked", {})
    return {"eager": eager, "graphed": graphed, "how": how, "replayed": replayed, "memory": memory,
            "memory_how": memory_how, "kv_bytes": engine.kv_bytes, "weight_bytes": engine.model.weight_bytes,
            "contexts": [first, first + args.steps - 1], "prefill": prefill, "dtype": engine.dtype,
            "kv_dtype": engine.kv_dtype_name, "params_record": engine.params_record, "params": engine.params}


def work(rank, world, device, args):
    """Every configuration on this rank; rank 0 appends the records."""
    from kvsim.runtime.tp import Comm
    from kvsim.runtime.tp_launch import environment, topology
    comm, start = Comm(), time.time()
    hw = args.hw or (profile_for(torch.cuda.get_device_name()) if device == "cuda" else None)
    extras = {**environment(), "topology": topology() if rank == 0 else "", "driver": _driver(),
              "command": "python3 " + " ".join(sys.argv)}
    done = done_keys(args.resume + [args.out])
    for config in grid(args):
        this = key(config["method"], args.model, config["seq"], config["batch"], args.layers, world)
        if this in done or not fits(config, args, hw):  # the same choice on every rank
            continue
        go = torch.tensor([1 if time.time() - start < args.budget_s else 0], device=device)
        dist.broadcast(go, src=0)  # rank 0's clock decides for all
        if not int(go):
            print("time budget reached; resume with --resume", flush=True) if rank == 0 else None
            return
        mine = run_config(config, args, comm, device)
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
        if rank == 0:
            record = record_of(config, args, ranks, device, hw, extras)
            append_jsonl(args.out, [record])
            print(f"x{world} {config['method']:>13} S={config['seq']:>6} B={config['batch']:>2} step "
                  f"{record['latency_s'] * 1e3:8.3f} ms  attn {record['attention']['latency_s'] * 1e3:8.3f} ms  "
                  f"mem {record['memory_bytes'] / 2**30:6.2f} GiB/GPU  {record['timer']}", flush=True)
        del mine
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="tensor-parallel ranks (one GPU each)")
    parser.add_argument("--out", required=True, help="append records to this JSONL file")
    parser.add_argument("--resume", nargs="*", default=[], help="skip configurations already in these files")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--model", default="llama-3.1-8b", help="preset or YAML path")
    parser.add_argument("--seqs", default="16384,65536")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=170)
    parser.add_argument("--no-graphs", dest="graphs", action="store_false",
                        help="eager steps only (where captured collectives do not replay)")
    parser.add_argument("--timeout-s", type=float, default=300, help="how long a collective may wait")
    parser.add_argument("--hw", help="profile to record (default: matched from the device name)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.gpus < 2:
        print("measure_tp: --gpus must be 2 or more (one GPU: kvsim measure)", file=sys.stderr)
        sys.exit(2)
    from kvsim.runtime.tp_launch import run_ranks
    run_ranks(work, args.gpus, args.device, args=(args,), timeout_s=args.timeout_s)


if __name__ == "__main__":
    main()
