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
        return moves

    def _encode(self, enc, table, changed, off) -> None:
        if changed:
            code = [table[q][1] if table[q][0] == HOST else off + table[q][1] for q in changed]
            enc[torch.tensor(changed, device=self.device)] = torch.tensor(code, dtype=torch.int32, device=self.device)

    def count(self, where: int) -> int:
        return sum(1 for w, _ in self.kv.values() if w == where)


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

    # ---- writes ---------------------------------------------------------------------------------
    def apply(self, moves: dict, values: dict | None = None, x: torch.Tensor | None = None) -> None:
        """Carry out ``advance``'s moves for this layer. New rows (prefill) come from ``values``
        [B, Hkv, n, d] and ``x`` [B, n, D] by position; a decode step's new row is ``put``."""
        for f in self.dev:
            self._move(moves["kv"], self.dev[f], self.host[f], None if values is None else values[f])
        self._move(moves["x"], self.xdev, self.xhost, None if x is None else self._pieces(x))

    def _move(self, entries, dev, host, src) -> None:
        """New rows from ``src`` by position, and GPU rows leaving for the host (d2h, counted)."""
        rows = [(pos, old, new) for pos, old, new in entries if new[0] != GONE and (
            (old is None and src is not None and pos < src.shape[2]) or (old is not None and old[0] == GPU))]
        for where in (GPU, HOST):
            chosen = [(pos, old, new) for pos, old, new in rows if new[0] == where]
            if not chosen:
                continue
            fresh = [pos for pos, old, _ in chosen if old is None]
            data = (src[:, :, fresh] if fresh else
                    dev[:, :, [old[1] for _, old, _ in chosen]])  # one kind per call: prefill or decode
            slots = [new[1] for *_, new in chosen]
            if where == GPU:
                dev[:, :, slots] = data
                continue
            data = data.movedim(2, 0)
            self.counter.add("d2h", tensor_bytes([data]))
            host[slots] = data.to(host.device)

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
    gather = OffloadRows.gather  # the compact rows and their list positions

    def compact(self, indices: torch.Tensor) -> dict:
        """Rows indices [B, Hkv, K] as [B, Hkv, K, d]: GPU and host rows by one gather per
        field; deleted rows among the first R list entries recomputed (``recompute_rows``)."""
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
        out[:, :, :R] (the list's first R entries are cand)."""
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
