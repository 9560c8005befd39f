"""Hardware profiles: pydantic models of the YAML files in ``hw_profiles/``.

Every number is a ``{value, source}`` pair, and its source says how much to trust it: a
datasheet figure, ``measured`` on this device (file, date, command), ``transferred`` from a
measured device (kvsim.transfer: a profile that ``inherits`` another takes the chip-level laws
it does not measure itself, scaled by its own datasheet facts), or ``assumed``. Datasheet peaks
(``peak_flops``, ``bandwidth_Bps``) and achieved efficiencies (``efficiency`` curves) are separate
fields, so a calibration replaces only the latter. Units are SI base units named in the key.
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from .errors import KvsimError
from .sourced import Sourced, _Frozen
from .topk_law import LibraryCall
from .trust import trust_of


class Curve(_Frozen):
    """Achieved fraction of peak against work per kernel (bytes or FLOPs), interpolated in log size."""

    points: list[tuple[float, float]] = Field(min_length=1)
    source: str = Field(min_length=3)

    @field_validator("points")
    @classmethod
    def _sorted_positive(cls, points):
        sizes = [size for size, _ in points]
        if not np.all(np.isfinite(np.asarray(points, dtype=float))):
            raise ValueError("sizes and efficiencies must be finite numbers")
        if any(size <= 0 for size in sizes) or sizes != sorted(sizes):
            raise ValueError("sizes must be positive and increasing")
        if any(not 0 < eff <= 1 for _, eff in points):
            raise ValueError("efficiencies must lie in (0, 1]")
        return points

    @property
    def trust(self) -> str:
        return trust_of(self.source)

    def at(self, size):
        sizes, effs = zip(*self.points)
        log_size = np.log10(np.maximum(np.asarray(size, dtype=float), 1.0))
        return np.interp(log_size, np.log10(sizes), effs)


def kernel_seconds(points, peak: float, size):
    """A kernel family's time for ``size`` bytes on its measured curve ``points`` [(bytes,
    fraction of ``peak``)]: straight lines between the measured times (a fixed ramp plus
    streaming), below the smallest size along the line through the two smallest points, never
    below that line's intercept, past the largest at the largest point's fraction; never faster
    than the peak. (kvsim.roofline times a family's ops this way; kvsim.transfer carries curves.)"""
    x = np.maximum(np.asarray(size, dtype=float), 1.0)
    sizes, effs = (np.asarray(v, dtype=float) for v in zip(*points))
    times = sizes / (peak * effs)
    if len(sizes) < 2:
        return np.maximum(x / (peak * effs[0]), x / peak)
    slope = (times[1] - times[0]) / (sizes[1] - sizes[0])  # seconds per byte past a fixed ramp
    ramp = max(times[0] - slope * sizes[0], 0.0)
    seconds = np.where(x < sizes[0], ramp + slope * x, np.interp(x, sizes, times))
    seconds = np.where(x > sizes[-1], x / (peak * effs[-1]), seconds)
    return np.maximum(seconds, x / peak)


class Compute(_Frozen):
    peak_flops: dict[Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4"], Sourced]
    efficiency: Curve  # by FLOPs per kernel
    tile_rows: Optional[Sourced] = None  # a GEMM's rows run in whole tiles of this many, where measured
    sm_count: Optional[Sourced] = None  # streaming multiprocessors: the kernels' launch policy, L2 and select rates
    clock_hz: Optional[Sourced] = None  # boost clock of the SMs

    def peak(self, dtype: str) -> float:
        if dtype in self.peak_flops:
            return self.peak_flops[dtype].value
        if dtype in ("bf16", "fp16", "fp8", "int8") and "fp32" in self.peak_flops:
            return self.peak_flops["fp32"].value  # no native unit: runs converted on fp32 lanes
        raise KvsimError(f"no peak FLOP/s for {dtype} in this profile (has {sorted(self.peak_flops)})")


SCORE_FAMILIES = {  # (method, op) -> its kernel family (Memory.kernel_efficiency), fitted by benchmarks/bench_scores.py
    ("h2o", "layers/attn/score_update"): "accumulate",
    ("alisa", "layers/attn/score_update"): "accumulate_indexed",
    ("h2o", "layers/attn/evict"): "evict",
    ("sparq", "layers/attn/sparq_score_approx"): "sparq_scores",  # its d-major K cold, logits to L2
    ("sparq", "layers/attn/sparq_softmax"): "sparq_softmax",  # the logits the kernel before wrote
}


class Memory(_Frozen):
    kind: str
    capacity_bytes: Sourced
    bandwidth_Bps: Sourced
    l2_bytes: Sourced
    efficiency: Curve  # by bytes per kernel
    # measured curves (by bytes per kernel) of kernel families that run unlike the fitted
    # ``efficiency``: "attention" (the split-K decode kernels, kernels/decode.py) and
    # "rope_attention" (its variant rotating keys as it loads them), "attention_logits" (the
    # variant also writing its fp32 logits), the score kernels; an op's ``curve`` names one
    kernel_efficiency: dict[str, Curve] = {}
    gather_efficiency: Optional[Sourced] = None  # fraction of ``efficiency`` for gathered rows
    reread_Bps: Optional[Sourced] = None  # loads of rows several programs read at once (L2 serves repeats)
    context_bytes: Optional[Sourced] = None  # CUDA context and loaded modules, outside the allocator
    allocator_reserve_bytes: Optional[Sourced] = None  # reserved by the caching allocator beyond its peak allocation


class Link(_Frozen):
    name: str
    h2d_Bps: Sourced
    d2h_Bps: Sourced
    efficiency: Sourced  # achieved fraction for large pinned copies
    copy_efficiency: Optional[Curve] = None  # pinned copies, by bytes per copy (benchmarks/bench_pcie.py)
    gather_efficiency: Optional[Curve] = None  # zero-copy kernel reads of pinned rows, by bytes per row
    # torch's cat and index_select joining an uploaded host block with its ring rows (offloaded
    # block readers, kvsim.offload): their fraction of the HBM peak (strided rows, not streamed)
    assemble_efficiency: Optional[Sourced] = None


class RingLink(_Frozen):
    """One class of GPU-to-GPU link a ring collective crosses."""
    name: str
    bandwidth_Bps: Sourced  # per GPU, per direction
    efficiency: Sourced  # achieved fraction in a ring all-reduce
    step_latency_s: Sourced  # one ring step: a chunk handed to the next GPU


class Interconnect(_Frozen):
    """How the GPUs of one node reach each other (kvsim.topology turns it into collective times).

    ``topology``: "switch", every GPU at its full per-GPU bandwidth to every other (NVSwitch) up
    to ``node_gpus``; "mesh", a direct link of ``bandwidth_Bps`` from each GPU to every other, so
    a collective over N GPUs runs N−1 rings side by side, one per link; "pairs", a bridge joins
    two GPUs and a ring of more than two also crosses ``beyond_pair`` (PCIe); "pcie", PCIe peer
    to peer only."""
    name: str
    bandwidth_Bps: Sourced  # per GPU, per direction
    efficiency: Sourced
    latency_s: Sourced  # per collective call
    topology: Literal["switch", "mesh", "pairs", "pcie"] = "switch"
    step_latency_s: Optional[Sourced] = None  # per ring step on these links (none: 0)
    node_gpus: Optional[Sourced] = None  # GPUs one node joins by this interconnect (none: no limit known)
    beyond_pair: Optional[RingLink] = None  # "pairs" only: the link between pairs

    @model_validator(mode="after")
    def _pairs_name_the_link_beyond(self):
        if (self.topology == "pairs") != (self.beyond_pair is not None):
            raise ValueError("topology 'pairs' needs beyond_pair (the link between pairs), and only it has one")
        return self

    def own_link(self) -> RingLink:
        step = self.step_latency_s or Sourced(value=0.0, source="not given")
        return RingLink(name=self.name, bandwidth_Bps=self.bandwidth_Bps, efficiency=self.efficiency,
                        step_latency_s=step)

    def ring_links(self, gpus: int) -> list[RingLink]:
        """The link classes a ring over ``gpus`` GPUs of one node crosses (a mesh: its N−1
        link-disjoint rings as one link of N−1 times the bandwidth)."""
        own = self.own_link()
        if self.topology == "pairs" and gpus > 2:
            return [own, self.beyond_pair]
        if self.topology == "mesh":
            rings = max(gpus - 1, 1)
            wide = Sourced(value=own.bandwidth_Bps.value * rings, source=f"{rings} links of {own.bandwidth_Bps.source}")
            return [own.model_copy(update={"bandwidth_Bps": wide})]
        return [own]


class Host(_Frozen):
    memory_bytes: Sourced
    bandwidth_Bps: Sourced
    # eager execution, where measured: host time to issue one call of each kind (torch calls that
    # launch a kernel, that run a cuBLAS matrix product, that only make views or allocate; a
    # Triton launch, plus triton_arg_s per runtime argument) and one host sync (a wait on an idle
    # device); kvsim.roofline's eager engine
    launch_s: Optional[dict[Literal["torch", "torch_gemm", "torch_host", "triton"], Sourced]] = None
    triton_arg_s: Optional[Sourced] = None
    sync_s: Optional[Sourced] = None
    # the runtime's own Python around each call it issues, beyond the bare call's cost above:
    # per torch call (the method's code around it) and per Triton launch (the kernel's wrapper:
    # checks, strides, grid); and the host-clock probe the costs were measured at
    # (runtime.launches.host_probe: seconds per tiny torch call), to scale them to a host that
    # ran faster or slower (kvsim.host_costs.at_host_probe)
    python_s: Optional[dict[Literal["torch", "triton"], Sourced]] = None
    probe_s: Optional[Sourced] = None


class Calibration(_Frozen):
    measurements: list[str]
    date: str
    method: str
    held_out: str = ""
    methods: list[str] = []  # the methods whose records it fitted (all where empty)
    holdout: Optional[float] = None  # the hold-out fraction (kvsim.calibrate.is_held_out)


class Origin(_Frozen):
    """Where a profile's transferred laws come from (filled in by kvsim.transfer)."""
    profile: str
    architecture: Optional[str] = None


# per part of a profile: the fields kvsim divides by (the peaks of compute.peak_flops too)
RATES = {"compute": ("tile_rows",),
         "memory": ("capacity_bytes", "bandwidth_Bps", "gather_efficiency", "reread_Bps"),
         "host_link": ("h2d_Bps", "d2h_Bps", "efficiency"),
         "interconnect": ("bandwidth_Bps", "efficiency"),
         "host": ("memory_bytes", "bandwidth_Bps"),
         "topk": ("throughput_Bps", "single_block.concurrent_rows")}


class HardwareProfile(_Frozen):
    name: str
    aliases: list[str] = []
    device_names: list[list[str]] = []  # words of the name the GPU reports (torch.cuda.get_device_name)
    kind: Literal["gpu", "cpu"]
    vendor: str
    description: str
    architecture: Optional[str] = None  # e.g. hopper: devices of one architecture share chip-level laws
    inherits: Optional[str] = None  # the measured profile whose laws this one takes where it has none
    transferred_from: Optional[Origin] = None
    compute: Compute
    memory: Memory
    launch_overhead_s: Sourced
    # one CUDA-graph replay's fixed cost on the device (graph start, first node's launch), paid once
    # per replayed step or attention-only call beside its kernels' own floors; where measured
    graph_launch_s: Optional[Sourced] = None
    workspace_bytes: Sourced  # runtime context, allocator slack, kernels' scratch
    host_link: Optional[Link] = None
    interconnect: Optional[Interconnect] = None
    host: Optional[Host] = None
    topk: Optional[LibraryCall] = None  # torch.topk's radix selects, where measured
    calibration: Optional[Calibration] = None

    @field_validator("compute", "memory", "host_link", "interconnect", "host", "topk")
    @classmethod
    def _rates_positive(cls, part, info):
        """Rates and capacities kvsim divides by: zero would make every prediction NaN or inf."""
        if part is None:
            return part
        rates = dict(part.peak_flops) if info.field_name == "compute" else {}
        for path in RATES.get(info.field_name, ()):
            value = part
            for name in path.split("."):
                value = getattr(value, name, None) if value is not None else None
            rates[path] = value
        for path, value in rates.items():
            if value is not None and not value.value > 0:
                raise ValueError(f"{path} must be greater than 0, got {value.value:g}")
        return part

    @property
    def preferred_dtype(self) -> str:
        return "bf16" if "bf16" in self.compute.peak_flops else "fp16"

    @property
    def trust_class(self) -> str:
        """Which validation residuals bound this profile's predictions (kvsim.intervals): its
        memory curve measured on this device, laws transferred within an architecture or
        across architectures, or nothing measured at all."""
        if self.memory.efficiency.trust == "measured":
            return "measured"
        origin = self.transferred_from
        if origin is not None and origin.architecture and origin.architecture == self.architecture:
            return "same-architecture"
        return "other-architecture" if origin is not None else "assumed"
