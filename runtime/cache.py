"""The KV cache: preallocated per-layer rows [B, Hkv, S_max, d] for K and V, bf16/fp32 or INT8
with an fp16 scale and zero per row (ALISA §5), on the device or partly in pinned host memory
(``runtime/offload.py``). Methods add their own side structures (kvsim/methods/*/runtime.py).

Bytes per cached token and KV head: 2·d·b (K and V), + 2·(2+2) for INT8 scale and zero.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from kvsim.kernel_contract import DENSE_TARGET_PROGRAMS, TARGET_PROGRAMS, split_count

from . import ops
from .reference import _take, pages_to_rows
from .transfers import PcieCounter, tensor_bytes


ROW_ALIGN = 16  # rows allocated in multiples of 16: cuBLAS falls back to slow kernels on odd sizes


def num_splits(batch: int, heads: int, rows: int, dense: bool = False) -> int:
    """The kernels' split-K factor for ``rows`` (kvsim's split_count, the policy kernels/
    applies; ``dense`` for decode_attention over a contiguous cache): passing it saves the kernel
    a device sync on max(seq_lens)."""
    target = DENSE_TARGET_PROGRAMS if dense else TARGET_PROGRAMS
    return int(split_count(batch, heads, max(rows, 1), target))


def capturing(device: torch.device) -> bool:
    """Whether the current CUDA stream is capturing a graph (never on other devices)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


@dataclass(frozen=True)
class CacheSpec:
    n_layers: int
    batch: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    max_seq: int
    device: torch.device
    dtype: torch.dtype
    kv_dtype: str = "same"  # "same" as the activations, or "int8"
    offload: float = 0.0  # fraction of each layer's tokens (oldest first) in pinned host memory

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def with_(self, **changes) -> "CacheSpec":
        return replace(self, **changes)


class DeviceRows:
    """Named row tensors [B, heads, rows, *tail] on one device; a row is one token's entry."""

    offloaded = False

    def __init__(self, batch: int, heads: int, rows: int, fields: dict, device):
        self.t = {name: torch.zeros(batch, heads, rows, *tail, dtype=dtype, device=device)
                  for name, (tail, dtype) in fields.items()}

    def load(self, values: dict, slots=None, seqs: slice = slice(None)) -> None:
        """Rows [0, n) from values [b, heads, n, ...] of the sequences ``seqs``, or at ``slots``
        [n] (a ring)."""
        for name, value in values.items():
            if slots is None:
                self.t[name][seqs, :, : value.shape[2]] = value
            else:
                self.t[name][seqs].index_copy_(2, slots, value)

    def put(self, slot, values: dict) -> None:
        """One row per (b, head): ``slot`` an int, or a tensor broadcastable to [B, heads]."""
        if not isinstance(slot, int) and set(values) == {"k", "v"} and slot.numel() == slot.shape[0]:
            # one slot per sequence: K and V rows in one launch (kernels/rows.py)
            ops.put_rows(self.t["k"], self.t["v"], slot.reshape(-1), values["k"], values["v"])
            return
        for name, value in values.items():
            t = self.t[name]
            if isinstance(slot, int):
                t[:, :, slot] = value
            else:
                B, H = t.shape[:2]
                b = torch.arange(B, device=t.device)[:, None]
                h = torch.arange(H, device=t.device)[None, :]
                t[b, h, slot.expand(B, H)] = value

    def full(self) -> dict:
        return self.t

    def gather(self, indices: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """What a gathered kernel reads: the whole rows and the same indices (no copy)."""
        return self.t, indices

    def compact(self, indices: torch.Tensor) -> dict:
        """Rows indices [B, Hsel, K] copied out: [B, Hsel, K, ...]."""
        return {name: _take(t, indices) for name, t in self.t.items()}

    @property
    def device_bytes(self) -> int:
        return tensor_bytes(self.t.values())

    host_bytes = 0


def kv_fields(spec: CacheSpec) -> dict:
    d = spec.head_dim
    if spec.kv_dtype == "int8":
        scales = {f"{x}_{s}": ((), torch.float16) for x in "kv" for s in ("scale", "zero")}
        return {"k": ((d,), torch.int8), "v": ((d,), torch.int8), **scales}
    return {"k": ((d,), spec.dtype), "v": ((d,), spec.dtype)}


class KVCache:
    """K and V for every layer; ``rows`` per (b, KV head) (S_max unless a method compresses),
    allocated up to a multiple of ROW_ALIGN (rows past the valid count are masked)."""

    def __init__(self, spec: CacheSpec, rows: int | None = None, counter: PcieCounter | None = None):
        rows = spec.max_seq if rows is None else rows
        self.spec, self.rows = spec, -(-rows // ROW_ALIGN) * ROW_ALIGN
        self.int8 = spec.kv_dtype == "int8"
        fields = kv_fields(spec)
        if spec.offload > 0:
            from .offload import OffloadRows
            make = lambda: OffloadRows(spec.batch, spec.n_kv_heads, self.rows, fields,  # noqa: E731
                                       spec.device, spec.offload, counter or PcieCounter())
        else:
            make = lambda: DeviceRows(spec.batch, spec.n_kv_heads, self.rows, fields, spec.device)  # noqa: E731
        self.layers = [make() for _ in range(spec.n_layers)]
        self._lens: dict[int, torch.Tensor] = {}
        self._captured: dict[int, torch.Tensor] = {}  # lengths a captured graph reads: never freed

    def seq_lens(self, n: int) -> torch.Tensor:
        """[B] int32 lengths n on the device, cached by n (the last 9 lengths). One read by a
        step being captured in a CUDA graph is also kept for good (``_captured``), and handed
        out again for n: every replay reads its address, so freeing it when the cache drops it
        would hand that memory to later allocations, and the replays would read whatever they
        write there (an illegal address where it read as a length: Quest offloaded at F = 0.9,
        whose step reads more than 9 lengths, issue 14)."""
        lens = self._lens.get(n, self._captured.get(n))  # never written: a kept one serves again
        if lens is None:
            if len(self._lens) > 8:
                self._lens.clear()
            lens = torch.full((self.spec.batch,), n, dtype=torch.int32, device=self.spec.device)
        self._lens[n] = lens
        if capturing(lens.device):
            self._captured[n] = lens
        return lens

    def encode(self, k: torch.Tensor, v: torch.Tensor) -> dict:
        if not self.int8:
            return {"k": k.to(self.spec.dtype), "v": v.to(self.spec.dtype)}
        out = {}
        for name, x in (("k", k), ("v", v)):
            out[name], out[f"{name}_scale"], out[f"{name}_zero"] = ops.quantize_kv(x)
        return out

    def decode(self, f: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.int8:
            return f["k"], f["v"]
        return tuple(ops.dequantize_kv(f[x], f[f"{x}_scale"], f[f"{x}_zero"], self.spec.dtype) for x in "kv")

    def load(self, layer: int, k, v, slots=None, seqs: slice = slice(None)) -> None:
        self.layers[layer].load(self.encode(k, v), slots, seqs)

    def put(self, layer: int, slot, k, v) -> None:
        store = self.layers[layer]
        one_per_seq = isinstance(slot, int) or slot.numel() == slot.shape[0] == self.spec.batch
        if self.int8 and not store.offloaded and one_per_seq:  # quantize and write: one launch
            t, slot = store.t, slot if isinstance(slot, int) else slot.reshape(-1)
            k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (k, v))
            ops.put_rows_int8(t["k"], t["v"], t["k_scale"], t["k_zero"], t["v_scale"], t["v_zero"], slot, k, v)
            return
        store.put(slot, self.encode(k, v))

    def keys(self, layer: int) -> torch.Tensor:
        """All K rows of a device-resident, 16-bit cache (selection layers read them)."""
        return self.layers[layer].full()["k"]

    def values(self, layer: int) -> torch.Tensor:
        return self.layers[layer].full()["v"]

    def rows_of(self, layer: int, indices: torch.Tensor):
        """K and V rows indices [B, Hsel, K] as [B, Hsel, K, d] in the compute dtype."""
        return self.decode(self.layers[layer].compact(indices))

    def attend_all(self, layer: int, q: torch.Tensor, n: int, logits: bool = False):
        """Dense decode attention of q [B,H,d] over rows [0, n): read 2·n·d·b per KV head. With
        ``logits``: (o, lse, logits [B,H,rows]) from the same kernel (kernels/scores.py)."""
        store, B, Hkv = self.layers[layer], self.spec.batch, self.spec.n_kv_heads
        if logits and self.int8:
            idx = torch.arange(n, device=q.device, dtype=torch.int32).expand(B, Hkv, n)
            counts = self.seq_lens(n)[:, None].expand(B, Hkv).contiguous()
            return self.attend_indices(layer, q, idx, counts, logits)
        if store.offloaded and not self.int8:  # the block and ring slices where they lie
            return self._attend_pieces(q, store.pieces(n), logits)
        # int8 offloaded caches still join block and ring rows into one tensor (prefix: six
        # fields copied; kvsim/offload.py charges it as offload/assemble_block)
        f = store.prefix(n) if store.offloaded else store.full()
        if logits:
            return ops.decode_attention_with_logits(q, f["k"], f["v"], self.seq_lens(n),
                                                    num_splits=num_splits(B, Hkv, n, dense=True))
        if self.int8:
            return ops.decode_attention_int8(q, f["k"], f["v"], f["k_scale"], f["k_zero"], f["v_scale"],
                                             f["v_zero"], self.seq_lens(n), num_splits=num_splits(B, Hkv, n))
        return ops.decode_attention(q, f["k"], f["v"], self.seq_lens(n), num_splits=num_splits(B, Hkv, n, dense=True))

    def _attend_pieces(self, q: torch.Tensor, pieces: list, logits: bool):
        """Attention over each piece [B,Hkv,m,d] of rows (offloaded: block, ring slices): each
        writes its o and lse (B·H·(d·b + 4)), merged by log-sum-exp (kernels/decode.py
        merge_partials); ``logits``: also the merged lse and the pieces' logits joined in
        position order [B,H,n] (a cat: read and write n·4 per query head). One piece: the
        kernel's own result."""
        B, Hkv = self.spec.batch, self.spec.n_kv_heads
        one, parts = len(pieces) == 1, []
        for f in pieces:
            m = f["k"].shape[2]
            args, splits = (q, f["k"], f["v"], self.seq_lens(m)), num_splits(B, Hkv, m, dense=True)
            if logits:
                parts.append(ops.decode_attention_with_logits(*args, num_splits=splits))
            else:
                parts.append(ops.decode_attention(*args, num_splits=splits, return_lse=not one))
        if one:
            return parts[0]
        merged = ops.merge_partials([p[0] for p in parts], [p[1] for p in parts], q.dtype, return_lse=logits)
        return (*merged, torch.cat([p[2] for p in parts], -1)) if logits else merged

    def prefetch(self, layer: int) -> None:
        """Start fetching layer's host rows for a read of every row (offloaded caches only)."""
        if self.layers[layer].offloaded:
            self.layers[layer].prefetch()

    def attend_indices(self, layer: int, q, indices, counts, logits: bool = False, page_size: int = 1):
        """Attention over indices[b, hs, :counts[b, hs]] (hs: KV head or query head); with
        ``logits`` also the lse and the logits [B,H,K] in list order. ``page_size`` > 1: indices
        list pages of that many rows, read in place by the kernel (expanded to rows where the
        rows are first copied out, offloaded, or logits are written)."""
        store = self.layers[layer]
        if page_size > 1 and (store.offloaded or logits):  # rows copied out / logits per row
            indices, page_size = pages_to_rows(indices, page_size), 1
        f, idx = store.gather(indices)  # in place (device), or a compact copy (offloaded)
        if self.int8:  # int8 rows dequantized inside the kernel (kernels/int8_probs.py)
            return ops.gathered_decode_attention_int8(
                q, f["k"], f["v"], f["k_scale"], f["k_zero"], f["v_scale"], f["v_zero"], idx,
                counts, logits=logits, page_size=page_size)
        if logits:
            return ops.decode_attention_with_logits(q, f["k"], f["v"], indices=idx, counts=counts)
        return ops.gathered_decode_attention(q, f["k"], f["v"], idx, counts, page_size=page_size)

    @property
    def device_bytes(self) -> int:
        return sum(s.device_bytes for s in self.layers)

    @property
    def host_bytes(self) -> int:
        return sum(s.host_bytes for s in self.layers)


class SinkRing:
    """Slots of a sink + recent window (StreamingLLM, DuoAttention streaming heads), as kvsim's
    cost models count it: the cache keeps ``sink`` first and ``recent`` newest past tokens and
    the current token attends to sink + recent + 1 rows (streaming-llm trims to start_size +
    recent_size after each token, eval_long_ppl.py). Positions < sink keep their slot; later
    ones cycle through recent + 1 slots, so writing position n drops position n − recent − 1."""

    def __init__(self, sink: int, recent: int, max_seq: int):
        if recent < 0 or sink < 0:
            raise ValueError(f"need sink >= 0 and recent >= 0, got sink={sink}, recent={recent}")
        self.sink, self.recent, self.cycle = sink, recent, recent + 1
        self.cap = sink + recent + 1  # rows at attention time
        self.rows = min(self.cap, max_seq)  # a window longer than the context never wraps

    def slot(self, pos):
        return pos if pos < self.sink else self.sink + (pos - self.sink) % self.cycle

    def prefill_positions(self, n: int) -> list[int]:
        """Positions < n still in the window when position n is written."""
        start = max(self.sink, n - self.recent)
        return list(range(min(self.sink, n))) + list(range(start, n))

    def count(self, n_with_current: int) -> int:
        return min(n_with_current, self.cap)

    def oldest_recent(self, n_with_current: int) -> int:
        """First position of the recent part of the window (the current token included)."""
        return max(self.sink, n_with_current - self.cycle)
