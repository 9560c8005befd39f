"""KV rows split between pinned host memory and the device (ALISA Phase II, arXiv 2403.17312
§4.3; FlexGen's CPU placement, arXiv 2303.06865 §4).

With fraction f, the oldest H(L) = min(⌊f·L⌋, L−1) of a layer's L tokens live on the host
([H_max, B, Hkv, ...] so a block of positions is one contiguous copy); the rest sit in a device
ring of ⌈(1−f)·S_max⌉+1 slots, slot = position mod ring. The current token is always on the
device. As L grows, rows leaving the ring go device→host (d2h: f·2·d·b per step and KV head on
average); the rows a method selects below H cross host→device each step (h2d: 2·d·b each), on a
side stream with non_blocking copies. Selected rows are gathered on the host and assembled into a
compact buffer [B, Hsel, K, ...] that the attention kernel then reads; index lists go to the host
to plan the fetch (d2h 4 B per host row: the int32 positions). A method that reads every row
(dense attention) takes the host block [0, H) in one contiguous copy instead (``prefix``).
"""
from __future__ import annotations

import math

import torch

from .transfers import PcieCounter, tensor_bytes
from .reference import _take


class OffloadRows:
    offloaded = True

    def __init__(self, batch: int, heads: int, rows: int, fields: dict, device, fraction: float,
                 counter: PcieCounter):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"offload fraction must be in (0, 1], got {fraction}")
        self.device, self.f, self.counter = torch.device(device), float(fraction), counter
        cuda = self.device.type == "cuda"
        self.host_rows = math.floor(self.f * rows)
        self.ring = rows - self.host_rows + 1
        self.host = {name: torch.zeros(self.host_rows, batch, heads, *tail, dtype=dtype, pin_memory=cuda)
                     for name, (tail, dtype) in fields.items()}
        self.dev = {name: torch.zeros(batch, heads, self.ring, *tail, dtype=dtype, device=self.device)
                    for name, (tail, dtype) in fields.items()}
        self.boundary = 0  # positions < boundary are on the host
        self.length = 0
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self._pending = None  # event after the last d2h copy

    def _target(self, length: int) -> int:
        return max(0, min(math.floor(self.f * length), length - 1, self.host_rows))

    def _to_host(self, first: int, last: int, source: dict | None = None) -> None:
        """Positions [first, last) to the host, from ``source`` [B,heads,n,...] or the ring."""
        if last <= first:
            return
        slots = torch.arange(first, last, device=self.device) % self.ring
        main = torch.cuda.current_stream(self.device) if self.stream else None
        for name, host in self.host.items():
            rows = source[name][:, :, first:last] if source else self.dev[name][:, :, slots]
            rows = rows.movedim(2, 0).contiguous()  # [n, B, heads, ...]
            self.counter.add("d2h", tensor_bytes([rows]))
            if self.stream is None:
                host[first:last].copy_(rows)
                continue
            self.stream.wait_stream(main)
            with torch.cuda.stream(self.stream):
                host[first:last].copy_(rows, non_blocking=True)
            rows.record_stream(self.stream)
        if self.stream is not None:
            self._pending = self.stream.record_event()

    def load(self, values: dict, slots=None) -> None:
        if slots is not None:
            raise ValueError("offloaded caches hold positions in order; ring layouts stay on the device")
        n = next(iter(values.values())).shape[2]
        H = self._target(n)
        self._to_host(0, H, values)
        resident = torch.arange(H, n, device=self.device)
        for name, value in values.items():
            self.dev[name].index_copy_(2, resident % self.ring, value[:, :, H:n])
        self.boundary, self.length = H, n

    def put(self, slot, values: dict) -> None:
        """Append position ``slot`` (== length): first move rows the boundary passes to the host."""
        if not isinstance(slot, int) or slot != self.length:
            raise ValueError(f"offloaded caches append in order: expected position {self.length}, got {slot}")
        new = self._target(slot + 1)
        self._to_host(self.boundary, new)
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)  # ring slot reuse
        for name, value in values.items():
            self.dev[name][:, :, slot % self.ring] = value
        self.boundary, self.length = new, slot + 1

    def full(self) -> dict:
        raise ValueError("this method reads every key of the cache; it cannot run offloaded")

    def gather(self, indices: torch.Tensor) -> tuple[dict, torch.Tensor]:
        B, Hsel, K = indices.shape
        local = torch.arange(K, device=indices.device, dtype=torch.int32).expand(B, Hsel, K).contiguous()
        return self.compact(indices), local

    def compact(self, indices: torch.Tensor) -> dict:
        """Rows indices [B,Hsel,K]: ring rows gathered on the device, host rows fetched (h2d)."""
        pos = indices.long()
        out = {name: _take(t, pos % self.ring) for name, t in self.dev.items()}
        on_host = pos < self.boundary
        where = on_host.nonzero()  # [N, 3]: b, hsel, j (synchronises: the fetch is planned on the host)
        if where.shape[0] == 0:
            return out
        host_pos = pos[on_host].to(torch.int32)
        self.counter.add("d2h", tensor_bytes([host_pos]))
        B, Hkv = self.dev["k"].shape[:2]
        p, b, h = host_pos.cpu().long(), where[:, 0].cpu(), where[:, 1].cpu() // (indices.shape[1] // Hkv)
        if self._pending is not None:
            self._pending.synchronize()  # host rows written by earlier d2h copies
        flat = (p * B + b) * Hkv + h  # row of the [H_max·B·Hkv, ...] host view
        for name, host in self.host.items():
            rows = torch.empty(flat.shape[0], *host.shape[3:], dtype=host.dtype, pin_memory=self.stream is not None)
            torch.index_select(host.reshape(-1, *host.shape[3:]), 0, flat, out=rows)  # host gather
            self.counter.add("h2d", tensor_bytes([rows]))
            out[name][where[:, 0], where[:, 1], where[:, 2]] = self._upload(rows)
        return out

    def prefix(self, n: int) -> dict:
        """Rows [0, n) of every (b, head) as [B, heads, n, ...]: the host block [0, boundary)
        in one contiguous copy (h2d, no host gather, no positions sent), then the ring rows."""
        slots = torch.arange(self.boundary, n, device=self.device) % self.ring
        if self.boundary and self._pending is not None:
            self._pending.synchronize()  # host rows written by earlier d2h copies
        out = {}
        for name, host in self.host.items():
            ring = self.dev[name].index_select(2, slots)
            if self.boundary == 0:
                out[name] = ring
                continue
            block = host[: self.boundary]  # [H, B, heads, ...], contiguous in pinned memory
            self.counter.add("h2d", tensor_bytes([block]))
            out[name] = torch.cat([self._upload(block).movedim(0, 2), ring], dim=2)
        return out

    def _upload(self, rows: torch.Tensor) -> torch.Tensor:
        """Host rows (pinned on CUDA) to the device on the side stream, non_blocking."""
        if self.stream is None:
            return rows.to(self.device)
        with torch.cuda.stream(self.stream):
            moved = rows.to(self.device, non_blocking=True)
        main = torch.cuda.current_stream(self.device)
        main.wait_stream(self.stream)
        moved.record_stream(main)
        return moved

    @property
    def device_bytes(self) -> int:
        return tensor_bytes(self.dev.values())

    @property
    def host_bytes(self) -> int:
        return tensor_bytes(self.host.values())
