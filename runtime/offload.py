"""KV rows split between pinned host memory and the device (ALISA Phase II, arXiv 2403.17312
§4.3; FlexGen's CPU placement, arXiv 2303.06865 §4).

With fraction f, the oldest H(L) = min(⌊f·L⌋, L−1) of a layer's L tokens live on the host
([H_max, B, Hkv, ...] so a block of positions is one contiguous copy); the rest sit in a device
ring of ⌈(1−f)·S_max⌉+1 slots, slot = position mod ring. The current token is always on the
device. As L grows, rows leaving the ring go device→host (d2h: f·2·d·b per step and KV head on
average); the rows a method selects below H cross host→device each step (h2d: 2·d·b each): a
GPU kernel gathers them, reading pinned host memory through its device-visible address, with the
ring rows of the same list, into a compact buffer [B, Hsel, K, ...] that attention then reads
(kernels/host_gather.py; no host sync, no positions sent to the host). A method that reads every
row (dense attention) takes the host block [0, H) in one contiguous copy per field instead
(h2d H·2·d·b per KV head) and reads it where it lands (``pieces``): the block, then the ring rows
[H, n) as one or two slot ranges, each attended separately and merged by log-sum-exp (no join:
HBM traffic beyond the rows only the pieces' q, o and lse, and the merge's stacks of them). An int8 cache joins them
into one tensor (``prefix``: read and write (n − H)·ρ for the ring rows picked, n·ρ for the
cat; ρ = 2·(d + 4) per row and KV head).
"""
from __future__ import annotations

import math

import torch

from . import ops
from .transfers import PcieCounter, tensor_bytes


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
        self._host_count = None  # list entries read from the host (counted by the gather kernel)
        self._prefetched = None  # (boundary, length, blocks, event) of a block upload under way

    def _target(self, length: int) -> int:
        return max(0, min(math.floor(self.f * length), length - 1, self.host_rows))

    def _to_host(self, first: int, last: int, source: dict | None = None, seqs: slice = slice(None)) -> bool:
        """Positions [first, last) to the host, from ``source`` [b,heads,n,...] (the sequences
        ``seqs``) or the ring, on the side stream forked from the compute stream; whether
        anything moved."""
        if last <= first:
            return False
        slots = torch.arange(first, last, device=self.device) % self.ring
        for name, host in self.host.items():
            rows = source[name][:, :, first:last] if source else self.dev[name][:, :, slots]
            rows = rows.movedim(2, 0).contiguous()  # [n, B, heads, ...]
            self.counter.add("d2h", tensor_bytes([rows]))
            target = host[first:last, seqs]
            if self.stream is None:
                target.copy_(rows)
                continue
            self._fork()
            with torch.cuda.stream(self.stream):  # part of the batch (strided): a blocking copy
                target.copy_(rows, non_blocking=target.is_contiguous())
            rows.record_stream(self.stream)
        if self.stream is not None:
            self._pending = self.stream.record_event()
        return True

    def _fork(self) -> None:
        """The side stream waits for the compute stream's work issued so far: its copies start no
        earlier, and inside a CUDA-graph capture they join the captured graph."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def load(self, values: dict, slots=None, seqs: slice = slice(None)) -> None:
        """Positions [0, n) of the sequences ``seqs`` from values [b, heads, n, ...]: the oldest
        to the host, the rest into the ring."""
        if slots is not None:
            raise ValueError("offloaded caches hold positions in order; ring layouts stay on the device")
        n = next(iter(values.values())).shape[2]
        H = self._target(n)
        self._to_host(0, H, values, seqs)
        resident = torch.arange(H, n, device=self.device)
        for name, value in values.items():
            self.dev[name][seqs].index_copy_(2, resident % self.ring, value[:, :, H:n])
        self.boundary, self.length = H, n
        self._prefetched = None

    def put(self, slot, values: dict) -> None:
        """Append position ``slot`` (== length): first move rows the boundary passes to the host."""
        if not isinstance(slot, int) or slot != self.length:
            raise ValueError(f"offloaded caches append in order: expected position {self.length}, got {slot}")
        new = self._target(slot + 1)
        if self._to_host(self.boundary, new) and self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)  # ring slot reuse
            self._pending = None  # the compute stream is past the d2h copies now
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
        """Rows indices [B,Hsel,K] as [B,Hsel,K,...]: one GPU gather per field reads host rows
        over PCIe (zero-copy from pinned memory) and ring rows from HBM (kernels/host_gather.py);
        no host sync, the positions stay on the device; h2d counted there."""
        self._wait_d2h()
        if self._host_count is None:
            self._host_count = self.counter.on_device("h2d", self.row_bytes, self.device)
        return {name: ops.gather_host_rows(self.host[name], t, indices, self.boundary,
                                           count=self._host_count if i == 0 else None)
                for i, (name, t) in enumerate(self.dev.items())}

    def _wait_d2h(self) -> None:
        """Host rows written by earlier d2h copies are complete before a kernel reads them: a
        wait on the device (the compute stream after the copy stream), not a host sync. A step
        waits only on copies it issued (``put`` joins its own), so it can be captured."""
        if self.stream is not None and self._pending is not None:
            torch.cuda.current_stream(self.device).wait_event(self._pending)
        self._pending = None  # waited once: a captured step never waits on an earlier step's event

    @property
    def row_bytes(self) -> int:
        """One position's row of every field for one (sequence, head)."""
        return sum(t[0, 0, 0].numel() * t.element_size() for t in self.dev.values())

    def prefetch(self) -> None:
        """Start the upload of the host block [0, boundary) now, on the side stream (forked from
        the compute stream here): a layer that reads every row knows them before it runs, so the
        copy overlaps the compute until then. ``pieces`` (``prefix``) takes it while at most one token was
        appended since: the rows the boundary passed in between are still in the ring (the slot
        the new token took held an older one). Issued and taken within one step, every copy is
        joined before the step ends (no event crosses steps: a step can be graph-captured)."""
        self._prefetched = None
        if self.boundary:
            blocks = {name: self._start_upload(host[: self.boundary]) for name, host in self.host.items()}
            done = self.stream.record_event() if self.stream is not None else None
            self._prefetched = (self.boundary, self.length, blocks, done)

    def pieces(self, n: int) -> list[dict]:
        """Rows [0, n) of every (b, head) as views [B, heads, m, ...] in position order, no copy:
        the host block (prefetched, or now: one contiguous copy per field, h2d) as a strided view
        (a movedim per field), then the ring rows past it as one slot range, or two where their
        positions wrap past the ring's end (a slice per field each). Attention reads each piece
        and merges them by log-sum-exp (runtime/cache.py ``attend_all``)."""
        first, blocks = self._block()
        out = [{name: b.movedim(0, 2) for name, b in blocks.items()}] if first else []
        for a, m in self._ring_runs(first, n):
            out.append({name: t[:, :, a:a + m] for name, t in self.dev.items()})
        return out

    def _ring_runs(self, first: int, n: int) -> list[tuple[int, int]]:
        """(first slot, rows) of positions [first, n) in the ring (n − first ≤ ring), in order."""
        start, rows = first % self.ring, n - first
        head = min(rows, self.ring - start)
        return [(a, m) for a, m in ((start, head), (0, rows - head)) if m > 0]

    def prefix(self, n: int) -> dict:
        """Rows [0, n) of every (b, head) joined into one tensor [B, heads, n, ...] (int8 caches:
        six fields): the host block (prefetched, or now) in one contiguous copy per field (h2d,
        no host gather, no positions sent), then the ring rows past it (index_select: read and
        write (n − H)·ρ; cat: read and write n·ρ; ρ a row's bytes of every field)."""
        first, blocks = self._block()
        slots = torch.arange(first, n, device=self.device) % self.ring
        out = {}
        for name in self.host:
            ring = self.dev[name].index_select(2, slots)
            out[name] = torch.cat([blocks[name].movedim(0, 2), ring], dim=2) if first else ring
        return out

    def _block(self):
        """(rows in the block, blocks [first, B, heads, ...] on the device or None): the prefetch,
        else the host block [0, boundary) uploaded now and joined."""
        first, blocks = self._take_prefetched()
        if blocks is None and first:
            blocks = {name: self._start_upload(host[:first]) for name, host in self.host.items()}
            self._join(blocks, None)
        return first, blocks

    def _take_prefetched(self):
        """(rows in the block, blocks) of a usable prefetch, else (boundary, None). Rows the
        boundary passed since, if they also left the ring (a ring of one slot: f = 1), are
        fetched now and appended to the block."""
        pre, self._prefetched = self._prefetched, None
        if pre is None or not 0 <= self.length - pre[1] <= 1:
            return self.boundary, None
        first, blocks = pre[0], pre[2]
        self._join(blocks, pre[3])
        if first < self.length - self.ring:  # the ring holds positions [length − ring, length)
            extra = {name: self._start_upload(host[first:self.boundary]) for name, host in self.host.items()}
            self._join(extra, None)
            blocks = {name: torch.cat([blocks[name], extra[name]]) for name in blocks}
            first = self.boundary
        return first, blocks

    def _start_upload(self, rows: torch.Tensor) -> torch.Tensor:
        """Host rows (pinned on CUDA) to the device on the side stream, non_blocking, after the
        d2h copies that wrote them (same stream) and the compute stream's work issued so far
        (fork); counted as issued."""
        self.counter.add("h2d", tensor_bytes([rows]))
        if self.stream is None:
            return rows.to(self.device, copy=True)
        self._fork()
        with torch.cuda.stream(self.stream):
            return rows.to(self.device, non_blocking=True)

    def _join(self, blocks: dict, done) -> None:
        """The compute stream waits for uploads (``done``: their event; None: all of the side
        stream) and owns their memory from here."""
        if self.stream is None:
            return
        main = torch.cuda.current_stream(self.device)
        if done is not None:
            main.wait_event(done)
        else:
            main.wait_stream(self.stream)
        for t in blocks.values():
            t.record_stream(main)

    @property
    def device_bytes(self) -> int:
        return tensor_bytes(self.dev.values())

    @property
    def host_bytes(self) -> int:
        return tensor_bytes(self.host.values())
