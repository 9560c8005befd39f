"""ALISA's three-phase KV placement executed (arXiv 2403.17312 §4.3, Algorithm 2), as
kvsim.schedule plans it (kvsim/schedule/executed.py: ``token_plan``'s integer counts).

``TokenPlacement`` (runtime/schedule_placement.py) says where each position's rows live.
``PlannedRows`` holds one layer's rows: on the GPU in one arena of B·d·arena_pieces elements,
rows outer, shared by K/V and kept x (one allocation [L, ...] for every layer: runtime/schedule_exec.py
``PlannedKV``):
  K, V:  K/V rows from the arena's front, [cap, 2, B, Hkv, d] (2·Hkv·d·b per row and sequence),
         seen as strided [B, Hkv, cap, d] views; [host_rows, B, Hkv, d] pinned on the host
  x:     x rows from the arena's back, [cap_x, B, D/d, d] (D·b per row and sequence; split in
         head-sized pieces so the gather kernel moves it in d-wide tiles, as it moves K/V), seen
         as [B, D/d, cap_x, d]; [x_host_rows, B, D/d, d] pinned on the host
A selected row is read by one GPU gather (kernels/host_gather.py: host rows over PCIe, GPU rows
from HBM through the strided view; the gather index of GPU slot s is ``off`` + s, off a multiple
of the view's rows); a deleted row's K/V is recomputed from its x: K = RoPE(norm1(x)·Wk),
V = norm1(x)·Wv (2·D·2·Hkv·d FLOPs per row and layer, as kvsim's recompute op counts).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import ops
from .offload import OffloadRows
from .schedule_placement import GPU, HOST, TokenPlacement, slot_runs
from .transfers import tensor_bytes


class PlannedRows:
    """One layer's K/V and kept x per ``TokenPlacement`` (module doc); read only by ``gather``."""

    offloaded = True

    def __init__(self, layer: int, place: TokenPlacement, arena: torch.Tensor, batch, heads, head_dim,
                 counter, model, rotary):
        self.layer, self.place, self.counter, self.model, self.rotary = layer, place, counter, model, rotary
        self.arena, device, dtype = arena, arena.device, arena.dtype
        pin = device.type == "cuda"
        s, B, self.xh = place.size, batch, place.row_pieces["x"]
        host = lambda *shape: torch.zeros(*shape, dtype=dtype, pin_memory=pin)  # noqa: E731
        kv = arena_rows(arena, place, "kv").view(-1, 2, B, heads, head_dim)
        self.dev = {f: kv[:, i].permute(1, 2, 0, 3) for i, f in enumerate(("k", "v"))}  # [B, Hkv, cap, d]
        self.host = {"k": host(s["kv"], B, heads, head_dim), "v": host(s["kv"], B, heads, head_dim)}
        self.xdev = arena_rows(arena, place, "x").view(-1, B, self.xh, head_dim).permute(1, 2, 0, 3)
        self.xhost = host(s["x"], B, self.xh, head_dim)
        self.row_bytes = 2 * head_dim * arena.element_size()  # K + V of one (b, head)
        self.recompute_rows = None  # [B, R] positions to recompute at the next gather (or None)
        # the rows each gather reads over PCIe, counted on the device (made here, not in a timed step)
        self._host_count = counter.on_device("h2d", self.row_bytes, device)
        self._x_count = counter.on_device("h2d", head_dim * self.xdev.element_size(), device)
        self.spans = []  # (start, end) of each recomputation: CUDA events, or perf_counter seconds
        self.stream = torch.cuda.Stream(device) if pin else None  # d2h copies (evictions)
        self._pending = None  # event after the last d2h copies
        self._ready = None  # (rows, event) of a prefetch_rows under way

    # ---- writes ---------------------------------------------------------------------------------
    def apply(self, moves: dict, values: dict | None = None, x: torch.Tensor | None = None,
              seqs: slice = slice(None)) -> None:
        """Carry out ``advance``'s moves for this layer. New rows (prefill) come from ``values``
        [b, Hkv, n, d] and ``x`` [b, n, D] by position, for the sequences ``seqs`` of the batch
        (a prefill pass); a decode step's new row is ``put``. GPU rows leaving for the host go by
        ``advance``'s eviction indices (built once a step)."""
        copies = []  # (host pool, rows [n, ...] on the device, host slot runs, sequences)
        if values is not None:
            for f in self.dev:
                self._fresh(moves["kv"], self.dev[f], self.host[f], values[f], copies, seqs)
        if x is not None:
            self._fresh(moves["x"], self.xdev, self.xhost, self._pieces(x), copies, seqs)
        evict = moves.get("evict") or {}
        pools = (("kv", self.dev[f], self.host[f]) for f in self.dev)
        for table, dev, host in (*pools, ("x", self.xdev, self.xhost)):
            if evict.get(table) is not None:
                slots, runs = evict[table]
                copies.append((host, dev.index_select(2, slots).movedim(2, 0), runs, slice(None)))
        if copies:
            self._to_host(copies)

    def _fresh(self, entries, dev, host, src, copies, seqs: slice) -> None:
        """New rows of the sequences ``seqs`` from ``src`` by position: GPU rows written now, host
        rows queued in ``copies``."""
        for where in (GPU, HOST):
            chosen = [(pos, new[1]) for pos, old, new in entries
                      if old is None and new[0] == where and pos < src.shape[2]]
            if not chosen:
                continue
            data = src[:, :, [pos for pos, _ in chosen]]
            slots = [slot for _, slot in chosen]
            if where == GPU:
                dev[seqs, :, slots] = data
            else:
                copies.append((host, data.movedim(2, 0), slot_runs(slots), seqs))

    def _to_host(self, copies) -> None:
        """Rows to the host pools (d2h, counted). On CUDA non_blocking into pinned memory on the
        side stream, forked from the compute stream (the rows are written before the copy reads
        them; a host slot freed this step is read by no earlier gather once the copy writes it);
        each copy reads a gathered copy of its rows (``record_stream``), so the GPU slots they
        left are free at once; ``compact`` waits on the event before a gather reads the host pool."""
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        for host, data, runs, seqs in copies:
            self.counter.add("d2h", tensor_bytes([data]))
            if self.stream is None:
                for first, end, i in runs:
                    host[first:end, seqs] = data[i:i + end - first]
                continue
            data = data.contiguous()
            with torch.cuda.stream(self.stream):  # part of the batch (strided): a blocking copy
                for first, end, i in runs:
                    target = host[first:end, seqs]
                    target.copy_(data[i:i + end - first], non_blocking=target.is_contiguous())
            data.record_stream(self.stream)
        if self.stream is not None:
            self._pending = self.stream.record_event()

    def _wait_d2h(self) -> None:
        """Host rows written by earlier d2h copies are complete before a kernel reads them: a
        wait on the device (the compute stream after the copy stream), not a host sync."""
        if self._pending is not None:
            torch.cuda.current_stream(self.stream.device).wait_event(self._pending)
        self._pending = None

    def put(self, slot, values: dict) -> None:
        """The decode step's new row (position ``slot``, placed by ``advance``)."""
        where, s = self.place.kv[slot]
        for f, value in values.items():
            self.dev[f][:, :, s] = value

    def _pieces(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, n, D] as [B, D/d, n, d]."""
        B, n, _ = x.shape
        return x.reshape(B, n, self.xh, -1).transpose(1, 2)

    def put_input(self, pos: int, x: torch.Tensor) -> None:
        """x [B, D] of a new token whose inputs are kept (pos < last)."""
        if pos < self.place.last:
            self.xdev[:, :, self.place.x[pos][1]] = self._pieces(x[:, None])[:, :, 0]

    def load(self, values: dict, slots=None) -> None:
        raise RuntimeError("a planned cache is filled by apply(); prefill goes through the executor")

    def full(self) -> dict:
        raise ValueError("a planned cache is read only through a selection (gather)")

    # ---- reads ----------------------------------------------------------------------------------
    in_place = True  # read the GPU pool in place while no row is on the host or recomputed

    def gather(self, indices: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """The rows to attend over and their list positions: while the placement holds no row on
        the host and nothing is recomputed (known on the host: its counts), the GPU pool itself
        and each entry's GPU slot (read in place, no copy); else the compact rows (``compact``)."""
        if self.reads_in_place():
            return self.dev, self.place.enc[indices.long()] - self.place.off
        return OffloadRows.gather(self, indices)

    def reads_in_place(self) -> bool:
        return self.in_place and self.recompute_rows is None and self.place.on_host == 0

    def prefetch_rows(self, indices: torch.Tensor) -> None:
        """Start gathering the rows ``indices`` [B, Hkv, K] lists, known before the layer runs
        (ALISA selects from the scores of earlier steps, arXiv 2403.17312 §4.3), on the side
        stream (forked from the compute stream here, behind this step's evictions on the same
        stream), so the PCIe reads overlap the compute until the layer attends; ``compact``
        takes them. The list's last entry must be the step's new token, written after this
        (``compact`` copies its row in: 2·d·b per (b, head)). On the CPU: gathered now."""
        self._ready = None  # never an earlier step's rows
        if self.reads_in_place():
            return
        if self.stream is None:
            self._ready = (self._gather_rows(indices), None)
            return
        main = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            out = self._gather_rows(indices)
            done = self.stream.record_event()
        for t in out.values():
            t.record_stream(main)  # allocated on the side stream, read on the compute stream
        self._ready = (out, done)

    def _gather_rows(self, indices: torch.Tensor) -> dict:
        """GPU and host rows of ``indices`` by one gather per field (host rows over PCIe,
        counted on the device), after the d2h copies that wrote the host pool."""
        self._wait_d2h()
        enc = self.place.enc[indices.long()]
        return {f: ops.gather_host_rows(self.host[f], t, enc, self.place.off,
                                        count=self._host_count if f == "k" else None)
                for f, t in self.dev.items()}

    def _take_prefetched(self) -> dict | None:
        """The prefetched rows, once the compute stream waited for them, with the new token's
        row (the list's last entry, put after the prefetch began) copied in from its GPU slot."""
        ready, self._ready = self._ready, None
        if ready is None:
            return None
        out, done = ready
        if done is not None:
            torch.cuda.current_stream(self.stream.device).wait_event(done)
        _, slot = self.place.kv[self.place.p["n"][self.place.step] - 1]
        for f, t in out.items():
            t[:, :, -1] = self.dev[f][:, :, slot]
        return out

    def compact(self, indices: torch.Tensor) -> dict:
        """Rows indices [B, Hkv, K] as [B, Hkv, K, d]: the prefetched rows (``prefetch_rows``)
        or a gather now; deleted rows among the first R list entries recomputed
        (``recompute_rows``)."""
        out = self._take_prefetched()
        if out is None:
            out = self._gather_rows(indices)
        if self.recompute_rows is not None:
            begun = mark(indices.device)
            self._recompute(out, self.recompute_rows)
            self.spans.append((begun, mark(indices.device)))
        return out

    def take_recompute_s(self) -> float:
        """Seconds spent recomputing since the last call (CUDA events: call after a sync)."""
        spans, self.spans = self.spans, []
        return sum(span_s(a, b) for a, b in spans)

    def _recompute(self, out: dict, cand: torch.Tensor) -> None:
        """K/V of the deleted positions among cand [B, R] from their kept x, written over
        out[:, :, :R] (the list's first R entries are cand; R may exceed the deleted ones
        selected: the rest are masked)."""
        deleted = cand < self.place.deleted
        code = torch.where(deleted, self.place.xenc[cand.clamp(max=self.place.last - 1)], self.place.xoff)
        B, R = cand.shape
        pieces = ops.gather_host_rows(self.xhost, self.xdev, code[:, None, :].expand(B, self.xh, R).int(),
                                      self.place.xoff, count=self._x_count)  # [B, D/d, R, d]
        x = pieces.transpose(1, 2).reshape(B, R, -1)
        k, v = recompute_kv(self.model, self.layer, x, cand, self.rotary)
        keep = deleted[:, None, :, None]
        for f, new in (("k", k), ("v", v)):
            out[f][:, :, :R] = torch.where(keep, new.to(out[f].dtype), out[f][:, :, :R])

    @property
    def device_bytes(self) -> int:
        return tensor_bytes([self.arena])

    @property
    def host_bytes(self) -> int:
        return tensor_bytes([*self.host.values(), self.xhost])


def arena_rows(arena: torch.Tensor, place: TokenPlacement, t: str) -> torch.Tensor:
    """Table t's rows of ``arena`` ([..., pieces·B·d]: one layer's, or every layer's) as
    [..., cap, row]: K/V rows from the front, x rows up to the back (module doc)."""
    row = arena.shape[-1] // place.pieces * place.row_pieces[t]
    span = place.cap[t] * row
    rows = arena[..., :span] if t == "kv" else arena[..., arena.shape[-1] - span:]
    return rows.unflatten(-1, (place.cap[t], row))


def mark(device):
    """A point in time: a recorded CUDA event on the GPU, perf_counter seconds on the CPU."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def span_s(begun, end) -> float:
    """Seconds between two marks (CUDA events: both done)."""
    return begun.elapsed_time(end) / 1e3 if hasattr(begun, "elapsed_time") else end - begun


def recompute_kv(model, layer: int, x: torch.Tensor, positions: torch.Tensor, rotary):
    """K (after RoPE at ``positions`` [B, R]) and V [B, Hkv, R, d] from layer inputs x [B, R, D]:
    the layer's norm and the K/V rows of its fused QKV projection."""
    c, p = model.cfg, model.layers[layer]
    weight, bias = p["qkv"]
    kv = F.linear(model.norm(x, p["norm1"]), weight[c.q_dim:], None if bias is None else bias[c.q_dim:])
    B, R = positions.shape
    k, v = (t.reshape(B, R, c.n_kv_heads, c.head_dim).transpose(1, 2) for t in kv.split([c.kv_dim, c.kv_dim], -1))
    return rotary(k, positions[:, None, :]), v
