"""ALISA's three-phase KV placement executed (arXiv 2403.17312 §4.3, Algorithm 2), as
kvsim.schedule plans it (kvsim/schedule/executed.py: ``token_plan``'s integer counts).

``TokenPlacement`` says, step by step, where each position's K/V (GPU pool, pinned host pool,
or deleted) and its kept layer inputs x (GPU or host) live; it is the same for every layer.
``PlannedRows`` holds one layer's rows in pools sized to the plan's peak counts:
  K, V:  [B, Hkv, gpu_rows, d] on the GPU, [host_rows, B, Hkv, d] pinned   (2·d·b per row)
  x:     [B, D/d, x_gpu_rows, d] on the GPU, [x_host_rows, B, D/d, d] pinned (D·b per row; split
         in head-sized pieces so the gather kernel moves it in d-wide tiles, as it moves K/V)
A selected row is read by one GPU gather (kernels/host_gather.py: host rows over PCIe, GPU rows
from HBM; the gather index of GPU slot s is ``off`` + s, off a multiple of the pool size); a
deleted row's K/V is recomputed from its x: K = RoPE(norm1(x)·Wk), V = norm1(x)·Wv
(2·D·2·Hkv·d FLOPs per row and layer, as kvsim's recompute op counts).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from . import ops
from .offload import OffloadRows
from .transfers import tensor_bytes

GPU, HOST, GONE = 1, 2, 3


def _pool(free: int) -> list[int]:
    return list(range(free - 1, -1, -1))  # pop() hands out slot 0 first


def _index(values: list, device, dtype=torch.long) -> torch.Tensor:
    """A host-built index list on ``device``: on CUDA through pinned memory, non_blocking (a
    pageable copy would make the host wait for the GPU's queue)."""
    if torch.device(device).type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


def _runs(slots: list[int]) -> list[tuple[int, int, int]]:
    """``slots`` as runs of consecutive slots: (first slot, end slot, index of its first row)."""
    runs = []
    for i, s in enumerate(slots):
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], s + 1, runs[-1][2])
        else:
            runs.append((s, s + 1, i))
    return runs


class TokenPlacement:
    """Positions' places per ``plan`` (token_plan's dict); ``advance(j)`` moves to step j."""

    def __init__(self, plan: dict, device):
        self.p, self.device = plan, torch.device(device)
        self.size = {k: max(1, int(plan[k])) for k in ("gpu_rows", "host_rows", "x_gpu_rows", "x_host_rows")}
        self.free = {k: _pool(v) for k, v in self.size.items()}
        self.off = math.ceil(self.size["host_rows"] / self.size["gpu_rows"]) * self.size["gpu_rows"]
        self.xoff = math.ceil(self.size["x_host_rows"] / self.size["x_gpu_rows"]) * self.size["x_gpu_rows"]
        S = plan["n"][-1]
        self.kv, self.x = {}, {}  # position -> (GPU/HOST/GONE, slot)
        self.enc = torch.full((S,), self.off, dtype=torch.int32, device=self.device)
        self.xenc = torch.full((max(plan["last"], 1),), self.xoff, dtype=torch.int32, device=self.device)
        self.step, self.deleted, self.last = -1, 0, plan["last"]
        self.on_host = 0  # positions whose K/V is in the host pool (host-known: no sync to ask)

    def alpha_share(self, p: int) -> bool:
        s, a = self.p["start"], self.p["alpha"]
        return p >= s and math.floor((p - s + 1) * a + 1e-9) > math.floor((p - s) * a + 1e-9)

    def _take(self, pool: str) -> int:
        if not self.free[pool]:
            raise RuntimeError(f"schedule executor: the {pool} pool ({self.size[pool]} rows) is full")
        return self.free[pool].pop()

    def _place(self, table, pos, where, pools, changed) -> tuple:
        """Put ``pos`` at ``where`` (freeing its old slot); (old, new) places."""
        old = table.get(pos)
        if old is not None and old[0] != GONE:
            self.free[pools[old[0]]].append(old[1])
        new = (where, self._take(pools[where]) if where != GONE else 0)
        if table is self.kv:
            self.on_host += (where == HOST) - (old is not None and old[0] == HOST)
        table[pos] = new
        changed.append(pos)
        return old, new

    def advance(self, j: int) -> dict:
        """Step j's moves: {"kv": [(pos, old, new)], "x": [...]} (old None: a new row)."""
        p, kvp, xp = self.p, {GPU: "gpu_rows", HOST: "host_rows"}, {GPU: "x_gpu_rows", HOST: "x_host_rows"}
        moves, ck, cx = {"kv": [], "x": []}, [], []
        lo_old, lo_del = (0, 0) if j == 0 else (p["old"][j - 1], p["deleted"][j - 1])
        for pos in range(lo_del, p["deleted"][j]):  # deleted first: their slots are free again
            if pos in self.kv or j == 0:
                moves["kv"].append((pos, *self._place(self.kv, pos, GONE, kvp, ck)))
        for pos in range(lo_old, p["old"][j]):  # left the recent window: the α-share goes to CPU
            if j == 0 or not self.alpha_share(pos):
                continue
            if self.kv[pos][0] == GPU:
                moves["kv"].append((pos, *self._place(self.kv, pos, HOST, kvp, ck)))
            if pos < self.last:
                moves["x"].append((pos, *self._place(self.x, pos, HOST, xp, cx)))
        new = range(p["deleted"][0], p["n"][0]) if j == 0 else [p["n"][j] - 1]
        for pos in new:
            host = j == 0 and pos < p["old"][0] and self.alpha_share(pos)
            moves["kv"].append((pos, *self._place(self.kv, pos, HOST if host else GPU, kvp, ck)))
        for pos in (range(min(self.last, p["n"][0])) if j == 0 else [q for q in new if q < self.last]):
            host = j == 0 and pos < p["old"][0] and self.alpha_share(pos)
            moves["x"].append((pos, *self._place(self.x, pos, HOST if host else GPU, xp, cx)))
        self._encode(self.enc, self.kv, ck, self.off)
        self._encode(self.xenc, self.x, cx, self.xoff)
        self.step, self.deleted = j, p["deleted"][j]
        moves["evict"] = {f: self._evictions(moves[f]) for f in ("kv", "x")}  # once for every layer
        return moves

    def _evictions(self, entries):
        """GPU rows leaving for the host this step, the same in every layer: (GPU slots as a device
        index, host slots as runs of consecutive slots), or None."""
        rows = [(old[1], new[1]) for _, old, new in entries if old is not None and old[0] == GPU and new[0] == HOST]
        if any(old is not None and old[0] == GPU and new[0] == GPU for _, old, new in entries):
            raise RuntimeError("schedule executor: a row moves between GPU slots")  # never planned
        if not rows:
            return None
        return _index([a for a, _ in rows], self.device), _runs([b for _, b in rows])

    def _encode(self, enc, table, changed, off) -> None:
        if changed:
            code = [table[q][1] if table[q][0] == HOST else off + table[q][1] for q in changed]
            enc[_index(changed, self.device)] = _index(code, self.device, torch.int32)

    def count(self, where: int) -> int:
        return self.on_host if where == HOST else sum(1 for w, _ in self.kv.values() if w == where)


class PlannedRows:
    """One layer's K/V and kept x per ``TokenPlacement`` (module doc); read only by ``gather``."""

    offloaded = True

    def __init__(self, layer: int, place: TokenPlacement, batch, heads, head_dim, d_model, dtype,
                 device, counter, model, rotary):
        self.layer, self.place, self.counter, self.model, self.rotary = layer, place, counter, model, rotary
        pin = torch.device(device).type == "cuda"
        s, B = place.size, batch
        dev = lambda *shape: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        host = lambda *shape: torch.zeros(*shape, dtype=dtype, pin_memory=pin)  # noqa: E731
        self.dev = {"k": dev(B, heads, s["gpu_rows"], head_dim), "v": dev(B, heads, s["gpu_rows"], head_dim)}
        self.host = {"k": host(s["host_rows"], B, heads, head_dim), "v": host(s["host_rows"], B, heads, head_dim)}
        self.xh = d_model // head_dim
        self.xdev, self.xhost = dev(B, self.xh, s["x_gpu_rows"], head_dim), host(s["x_host_rows"], B, self.xh, head_dim)
        self.row_bytes = 2 * head_dim * self.dev["k"].element_size()  # K + V of one (b, head)
        self.recompute_rows = None  # [B, R] positions to recompute at the next gather (or None)
        self._host_count = self._x_count = None
        self.spans = []  # (start, end) of each recomputation: CUDA events, or perf_counter seconds
        self.stream = torch.cuda.Stream(device) if pin else None  # d2h copies (evictions)
        self._pending = None  # event after the last d2h copies

    # ---- writes ---------------------------------------------------------------------------------
    def apply(self, moves: dict, values: dict | None = None, x: torch.Tensor | None = None) -> None:
        """Carry out ``advance``'s moves for this layer. New rows (prefill) come from ``values``
        [B, Hkv, n, d] and ``x`` [B, n, D] by position; a decode step's new row is ``put``. GPU
        rows leaving for the host go by ``advance``'s eviction indices (built once a step)."""
        copies = []  # (host pool, rows [n, ...] on the device, host slot runs)
        if values is not None:
            for f in self.dev:
                self._fresh(moves["kv"], self.dev[f], self.host[f], values[f], copies)
        if x is not None:
            self._fresh(moves["x"], self.xdev, self.xhost, self._pieces(x), copies)
        evict = moves.get("evict") or {}
        pools = (("kv", self.dev[f], self.host[f]) for f in self.dev)
        for table, dev, host in (*pools, ("x", self.xdev, self.xhost)):
            if evict.get(table) is not None:
                slots, runs = evict[table]
                copies.append((host, dev.index_select(2, slots).movedim(2, 0), runs))
        if copies:
            self._to_host(copies)

    def _fresh(self, entries, dev, host, src, copies) -> None:
        """New rows from ``src`` by position: GPU rows written now, host rows queued in ``copies``."""
        for where in (GPU, HOST):
            chosen = [(pos, new[1]) for pos, old, new in entries
                      if old is None and new[0] == where and pos < src.shape[2]]
            if not chosen:
                continue
            data = src[:, :, [pos for pos, _ in chosen]]
            slots = [slot for _, slot in chosen]
            if where == GPU:
                dev[:, :, slots] = data
            else:
                copies.append((host, data.movedim(2, 0), _runs(slots)))

    def _to_host(self, copies) -> None:
        """Rows to the host pools (d2h, counted). On CUDA non_blocking into pinned memory on the
        side stream, forked from the compute stream (the rows are written before the copy reads
        them; a host slot freed this step is read by no earlier gather once the copy writes it);
        each copy reads a gathered copy of its rows (``record_stream``), so the GPU slots they
        left are free at once; ``compact`` waits on the event before a gather reads the host pool."""
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        for host, data, runs in copies:
            self.counter.add("d2h", tensor_bytes([data]))
            if self.stream is None:
                for first, end, i in runs:
                    host[first:end] = data[i:i + end - first]
                continue
            data = data.contiguous()
            with torch.cuda.stream(self.stream):
                for first, end, i in runs:
                    host[first:end].copy_(data[i:i + end - first], non_blocking=True)
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
        if self.in_place and self.recompute_rows is None and self.place.on_host == 0:
            return self.dev, self.place.enc[indices.long()] - self.place.off
        return OffloadRows.gather(self, indices)

    def compact(self, indices: torch.Tensor) -> dict:
        """Rows indices [B, Hkv, K] as [B, Hkv, K, d]: GPU and host rows by one gather per
        field; deleted rows among the first R list entries recomputed (``recompute_rows``)."""
        self._wait_d2h()
        enc = self.place.enc[indices.long()]
        if self._host_count is None:
            self._host_count = self.counter.on_device("h2d", self.row_bytes, indices.device)
        out = {f: ops.gather_host_rows(self.host[f], t, enc, self.place.off,
                                       count=self._host_count if f == "k" else None)
               for f, t in self.dev.items()}
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
        if self._x_count is None:
            self._x_count = self.counter.on_device("h2d", self.xdev.shape[-1] * self.xdev.element_size(),
                                                   cand.device)
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
        return tensor_bytes([*self.dev.values(), self.xdev])

    @property
    def host_bytes(self) -> int:
        return tensor_bytes([*self.host.values(), self.xhost])


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
