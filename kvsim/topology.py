"""Tensor-parallel collectives on one node's interconnect: which GPU counts a profile can run,
and how long a ring collective takes there.

A ring over N GPUs moves a message of M bytes in steps, each GPU handing M/N to the next:
an all-reduce takes 2·(N−1) steps (reduce-scatter, then all-gather) and sends 2·(N−1)/N·M per
GPU; an all-gather N−1 steps and (N−1)/N·M. Every step waits for the slowest link on the ring:

    time = calls · latency_s + steps · step_latency + sent / (bandwidth · efficiency)

with the bandwidth, efficiency and step latency of the slowest link class the ring crosses
(the lowest achieved bandwidth; the largest step latency). This is NCCL's own ring model
(src/graph/tuning.cc: latency = base + nsteps · per-hop latency, plus bytes over bus bandwidth).
A ring of more than two GPUs joined in bridged pairs crosses PCIe between the pairs, so PCIe
sets its pace. GPU counts beyond one node are refused: kvsim has no network model.
"""
from __future__ import annotations

import numpy as np

from .errors import KvsimError
from .hardware import HardwareProfile, RingLink


def allreduce_steps(gpus: int) -> int:
    return 2 * (gpus - 1)


def allgather_steps(gpus: int) -> int:
    return gpus - 1


def allreduce_sent(message, gpus: int):
    """Bytes each GPU sends in a ring all-reduce of ``message`` bytes: 2·(N−1)/N·M."""
    return 2.0 * (gpus - 1) / gpus * np.asarray(message, dtype=float)


def allgather_sent(message, gpus: int):
    """Bytes each GPU sends in a ring all-gather whose result is ``message`` bytes: (N−1)/N·M."""
    return (gpus - 1) / gpus * np.asarray(message, dtype=float)


def check_gpus(hw: HardwareProfile, gpus: int) -> None:
    """One clear error where ``gpus`` tensor-parallel devices of ``hw`` cannot be one node."""
    if gpus == 1:
        return
    if hw.kind == "cpu":
        raise KvsimError(f"{hw.name} is a CPU profile: tensor parallelism needs GPUs, so --gpus must be 1 (got {gpus})")
    link = hw.interconnect
    if link is None:
        raise KvsimError(f"{hw.name} has no GPU interconnect in its profile, so --gpus must be 1 (got {gpus})")
    if link.node_gpus is not None and gpus > link.node_gpus.value:
        raise KvsimError(f"{hw.name}: one node holds {link.node_gpus.value:.0f} GPUs; --gpus {gpus} spans several "
                         f"nodes, and kvsim does not model the network between nodes")


def slowest_link(hw: HardwareProfile, gpus: int) -> RingLink:
    """The link class that paces a ring over ``gpus`` GPUs of ``hw``'s node."""
    check_gpus(hw, gpus)
    links = hw.interconnect.ring_links(gpus)
    slowest = min(links, key=lambda link: link.bandwidth_Bps.value * link.efficiency.value)
    step = max(link.step_latency_s.value for link in links)
    return slowest.model_copy(update={"step_latency_s": slowest.step_latency_s.model_copy(update={"value": step})})


def collective_time(sent, calls, steps_per_call, gpus: int, hw: HardwareProfile):
    """Seconds for ``calls`` ring collectives among ``gpus`` GPUs, each GPU sending ``sent`` bytes
    in all and each call taking ``steps_per_call`` ring steps."""
    sent = np.asarray(sent, dtype=float)
    if gpus <= 1 or not np.any(sent > 0):
        return np.zeros_like(sent)
    link, interconnect = slowest_link(hw, gpus), hw.interconnect
    busy = sent / (link.bandwidth_Bps.value * link.efficiency.value)
    calls = np.asarray(calls, dtype=float)
    fixed = calls * (interconnect.latency_s.value + steps_per_call * link.step_latency_s.value)
    return np.where(sent > 0, busy + fixed, 0.0)
