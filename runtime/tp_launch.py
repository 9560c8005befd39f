"""Start N ranks of a tensor-parallel run in this host, torchrun-like but in-process: spawned
processes, a TCP rendezvous on a free local port, NCCL with one GPU per rank (``cuda``) or gloo
(``cpu``). NVLink multicast is off in the parent and in every child before the process group
starts (runtime/tp_env.py).

    run_ranks(work, world=2, device="cuda", args=(config,))   # work(rank, world, device, *args)
"""
from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .tp_env import NO_MULTICAST, disable_multicast

RENDEZVOUS_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((RENDEZVOUS_HOST, 0))
        return s.getsockname()[1]


def run_ranks(work, world: int, device: str = "cuda", args: tuple = (), timeout_s: float = 900) -> None:
    """Run ``work(rank, world, device, *args)`` in ``world`` processes with the default process
    group initialised; raises when a rank fails. ``timeout_s``: how long a collective may wait."""
    if device == "cuda" and torch.cuda.device_count() < world:
        raise ValueError(f"{world} ranks need {world} GPUs, found {torch.cuda.device_count()}")
    disable_multicast()  # spawned children inherit the environment; _rank sets it again
    mp.spawn(_rank, args=(work, world, device, free_port(), timeout_s, args), nprocs=world, join=True)


def _rank(rank, work, world, device, port, timeout_s, args):
    disable_multicast()
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://{RENDEZVOUS_HOST}:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        work(rank, world, device, *args)
    finally:
        dist.destroy_process_group()


def environment() -> dict:
    """What a record says about the run's communication: NCCL version, the multicast flags as
    this process has them."""
    nccl = None
    if torch.cuda.is_available():
        version = torch.cuda.nccl.version()
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return {"nccl": nccl, "env": {name: os.environ.get(name) for name in NO_MULTICAST}}


def topology() -> str:
    """``nvidia-smi topo -m``: how the GPUs are linked (NVLink NV#, PCIe PIX/PHB/SYS)."""
    if not shutil.which("nvidia-smi"):
        return "unavailable: nvidia-smi not on PATH"
    done = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else f"unavailable: {done.stderr.strip()[:200]}"
