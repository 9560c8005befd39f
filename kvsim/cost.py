"""Cost: the named ops of one step, each with FLOPs and bytes per level, plus what is resident.

Every quantity is a numpy array (or scalar) broadcast over the workload's context and batch, so
one Cost describes a whole sweep grid. Op names are paths: ``layers/attn/decode``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

OP_KINDS = ("attention", "linear", "elementwise", "cache", "transfer", "comm", "recompute")
QUANTITIES = ("flops", "hbm_read", "hbm_write", "h2d", "d2h", "host_bytes", "comm_bytes", "launches",
              "topk_calls", "topk_single_calls", "loaded_bytes", "torch_calls", "gemm_calls",
              "torch_host_calls", "triton_launches", "triton_args", "host_syncs")
# What the host issues for an op in an eager step (each kind costs the profile's host.launch_s):
# torch calls that launch kernels, those that run a matrix product (cuBLAS), those that only
# make views or allocate, Triton kernel launches (and their runtime arguments), and host syncs
# (the host waits for the device). Counted as the runtime counts them (runtime/launches.py).
HOST_CALL_KINDS = {"torch": "torch_calls", "torch_gemm": "gemm_calls", "torch_host": "torch_host_calls",
                   "triton": "triton_launches"}


@dataclass(frozen=True)
class Op:
    """One kernel kind, summed over the layers it runs in (``launches`` counts the kernels).

    Bytes: ``hbm_*`` device memory, ``h2d``/``d2h`` the host link per direction, ``host_bytes``
    host DRAM traffic, ``comm_bytes`` sent per GPU over the GPU interconnect. ``stream`` "copy"
    ops may overlap the "compute" stream; ``dtype`` selects the peak FLOP/s."""

    name: str
    kind: str
    flops: object = 0.0
    hbm_read: object = 0.0
    hbm_write: object = 0.0
    h2d: object = 0.0
    d2h: object = 0.0
    host_bytes: object = 0.0
    comm_bytes: object = 0.0
    launches: object = 1.0
    topk_calls: object = 0.0  # torch.topk multi-block calls it stands for (timed by a profile's ``topk``)
    topk_single_calls: object = 0.0  # torch.topk single-block calls, each over ``topk_shape``
    topk_shape: tuple = (0.0, 0.0)  # (rows, candidates per row) of one single-block call; not scaled
    gemm_rows: object = 0.0  # a matrix product's rows (tokens) per launch, 0 if not one; not scaled
    comm_gpus: int = 1  # GPUs in the ring of a "comm" op's collective; not scaled
    comm_steps: float = 0.0  # ring steps of one collective call (kvsim.topology); not scaled
    loaded_bytes: object = 0.0  # bytes its programs load, repeats served by L2 included (0: hbm_read)
    torch_calls: object = None  # host: torch calls that launch kernels (None: one per launch)
    gemm_calls: object = 0.0  # host: torch calls that run a matrix product (F.linear)
    torch_host_calls: object = 0.0  # host: torch calls that launch nothing (views, allocations)
    triton_launches: object = 0.0  # host: Triton kernel launches (each one of ``launches``)
    triton_args: object = 0.0  # host: runtime arguments passed to those launches, in total
    host_syncs: object = 0.0  # host waits for the device (.item(), data-dependent shapes, fetches)
    link_row_bytes: object = 0.0  # contiguous bytes per row a kernel reads over the host link (0: bulk copies); not scaled
    access: str = "contiguous"  # "gather": rows read one by one through an index list
    curve: str = "memory"  # the kernel family whose measured curve times its bytes (kvsim.roofline)
    dtype: str = "bf16"
    stream: str = "compute"
    copy_layers: object = 0.0  # layers whose blocks a "copy" op fetches, one after another (kvsim.offload); not scaled

    def __post_init__(self):
        if self.kind not in OP_KINDS:
            raise ValueError(f"op {self.name}: unknown kind {self.kind}")

    @property
    def hbm_bytes(self):
        return np.add(self.hbm_read, self.hbm_write)

    @property
    def pcie_bytes(self):
        return np.add(self.h2d, self.d2h)

    @property
    def host_calls(self) -> dict:
        """{kind: count} the host issues for this op in an eager step (HOST_CALL_KINDS)."""
        torch = self.torch_calls
        if torch is None:
            torch = np.subtract(np.subtract(self.launches, self.triton_launches), self.gemm_calls)
        return {"torch": torch, "torch_gemm": self.gemm_calls, "torch_host": self.torch_host_calls,
                "triton": self.triton_launches}

    def issued(self, torch=0.0, torch_host=0.0, triton=0.0, syncs=0.0, gemm=0.0, args=0.0) -> "Op":
        """This op with its host calls per run (before ``scaled``): the runtime's count;
        ``args``: the runtime arguments of its Triton launches, in total."""
        return self._copy(torch_calls=torch, gemm_calls=gemm, torch_host_calls=torch_host,
                          triton_launches=triton, triton_args=args, host_syncs=syncs)

    def scaled(self, factor) -> "Op":
        """Every quantity times ``factor`` (launches too: ``factor`` layers run it). ``*`` is
        numpy's multiply wherever an array takes part, and the same IEEE product for two
        Python numbers without a ufunc call (this runs for every op built)."""
        if isinstance(factor, (int, float)) and factor == 1:  # x * 1 is x: nothing to copy
            return self
        fields = self.__dict__
        return self._copy(**{q: fields[q] * factor for q in QUANTITIES if fields[q] is not None})

    def _copy(self, **changes) -> "Op":
        """``replace`` without re-running ``__init__``: the kind, checked when built, is unchanged."""
        op = object.__new__(Op)
        op.__dict__.update(self.__dict__, **changes)
        return op


@dataclass(frozen=True)
class Resident:
    """Bytes held for the whole step: on the GPU and in host memory. ``kv`` marks the KV cache
    and a method's metadata about it (duplicates, page min/max, accumulated scores)."""

    name: str
    gpu: object = 0.0
    host: object = 0.0
    kv: bool = False


@dataclass(frozen=True)
class Cost:
    ops: tuple[Op, ...]
    resident: tuple[Resident, ...] = ()

    def total(self, quantity: str, kinds: tuple[str, ...] | None = None):
        picked = [op for op in self.ops if kinds is None or op.kind in kinds]
        value = lambda op: op.host_calls["torch"] if quantity == "torch_calls" else getattr(op, quantity)  # noqa: E731
        return sum((np.asarray(value(op), dtype=float) for op in picked), np.asarray(0.0))

    @property
    def flops(self):
        return self.total("flops")

    @property
    def hbm_bytes(self):
        return self.total("hbm_read") + self.total("hbm_write")

    @property
    def pcie_bytes(self):
        return self.total("h2d") + self.total("d2h")

    def attention(self) -> "Cost":
        return Cost(tuple(op for op in self.ops if op.kind == "attention"))

    def resident_total(self, where: str, kv_only: bool = False):
        return sum((np.asarray(getattr(r, where), dtype=float) for r in self.resident
                    if r.kv or not kv_only), np.asarray(0.0))

    @cached_property  # a cost is read by every hardware it is shared with (kvsim.plan_memo)
    def gpu_bytes(self):
        return self.resident_total("gpu")

    @cached_property
    def host_resident_bytes(self):
        return self.resident_total("host")

    @property
    def kv_bytes(self):
        return self.resident_total("gpu", kv_only=True) + self.resident_total("host", kv_only=True)

    def group(self, depth: int = 2) -> dict[str, dict[str, np.ndarray]]:
        """Quantities summed by the first ``depth`` parts of the op names."""
        groups: dict[str, dict[str, np.ndarray]] = {}
        for op in self.ops:
            key = "/".join(op.name.split("/")[:depth])
            bucket = groups.setdefault(key, {q: np.asarray(0.0) for q in QUANTITIES})
            for q in QUANTITIES:
                value = op.host_calls["torch"] if q == "torch_calls" else getattr(op, q)
                bucket[q] = bucket[q] + np.asarray(value, dtype=float)
        return groups

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.ops + other.ops, self.resident + other.resident)

    def scaled(self, factor) -> "Cost":
        return Cost(tuple(op.scaled(factor) for op in self.ops), self.resident)

