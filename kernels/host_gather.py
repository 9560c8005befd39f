"""Selected KV rows gathered by the GPU from pinned host memory and the device ring (offloaded
KV, ALISA Phase II, arXiv 2403.17312 §4.3; runtime/offload.py's layout).

Layout of one field (K, V, or an int8 scale/zero): ``host`` [H_max, B, Hkv, *row] in pinned host
memory (positions < ``boundary``) and ``dev`` [B, Hkv, ring, *row] on the device (position p at
slot p mod ring), any strides over (B, Hkv, ring) with each row contiguous (runtime/offload.py's
ring is contiguous; runtime/schedule_store.py's arena views are rows-outer). ``indices``
[B, Hsel, K] lists positions (Hsel = Hkv, or H with KV head hs·Hkv/H). Output ``out`` [B, Hsel, K, *row]: row (b, hs, j) = the row of position
indices[b, hs, j], read over PCIe by the kernel itself where the position is below the
boundary (zero-copy: pinned memory is mapped into the device's address space, so its address
is valid in a kernel under unified addressing), else from the ring in HBM. No host sync: the
boundary is a host integer, the positions never leave the device.

Bytes per gathered row of R bytes: R over PCIe (host rows) or R read from HBM (ring rows),
R written to HBM, + 4 B of index.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import interpreting, launcher, pow2_at_least

BLOCK_R = 16  # rows per program: 16 rows of a 256-B bf16 head row is one 4-KB request burst


@triton.jit
def _gather_kernel(HOST, DEV, OUT, IDX, COUNT, boundary, ring, B, HKV, K, s_ib, s_ih, s_db, s_dh, s_dr, group,
                   ROW: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
                   HAS_COUNT: tl.constexpr):
    pid_r = tl.program_id(0)
    pid = tl.program_id(1)  # (sequence, list)
    n_sel = HKV * group
    b = (pid // n_sel).to(tl.int64)
    hs = (pid % n_sel).to(tl.int64)
    h = hs // group
    j = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    j_mask = j < K
    pos = tl.load(IDX + b * s_ib + hs * s_ih + j, mask=j_mask, other=0).to(tl.int64)
    col = tl.arange(0, BLOCK_C)
    c_mask = col < ROW
    on_host = (pos < boundary) & j_mask
    on_dev = (pos >= boundary) & j_mask
    host_row = ((pos * B + b) * HKV + h) * ROW
    dev_row = b * s_db + h * s_dh + (pos % ring) * s_dr
    x = tl.load(HOST + host_row[:, None] + col[None, :], mask=on_host[:, None] & c_mask[None, :], other=0)
    y = tl.load(DEV + dev_row[:, None] + col[None, :], mask=on_dev[:, None] & c_mask[None, :], other=0)
    if HAS_COUNT:  # rows this program read over the link, for the transfer counters
        tl.atomic_add(COUNT, tl.sum(on_host.to(tl.int64), 0))
    out_row = ((b * n_sel + hs) * K + j) * ROW
    tl.store(OUT + out_row[:, None] + col[None, :], tl.where(on_host[:, None], x, y),
             mask=j_mask[:, None] & c_mask[None, :])


def _check(host, dev, indices):
    B, Hkv, ring = dev.shape[:3]
    if host.shape[1:3] != (B, Hkv) or host.shape[3:] != dev.shape[3:] or host.dtype != dev.dtype:
        raise ValueError(f"host {tuple(host.shape)} {host.dtype} does not match device rows "
                         f"{tuple(dev.shape)} {dev.dtype}")
    if indices.dim() != 3 or indices.shape[0] != B or indices.shape[1] % Hkv:
        raise ValueError(f"indices must be [{B}, a multiple of {Hkv}, K], got {tuple(indices.shape)}")
    if not (host.is_contiguous() and _rows_contiguous(dev)):
        raise ValueError("host rows must be contiguous, and each device row")
    return B, Hkv, ring


def _rows_contiguous(dev) -> bool:
    """Whether each row dev[b, h, s] is contiguous (its strides, not a tensor call)."""
    step = 1
    for size, stride in zip(reversed(dev.shape[3:]), reversed(dev.stride()[3:])):
        if size > 1 and stride != step:
            return False
        step *= size
    return True


def gather_host_rows(host, dev, indices, boundary: int, out=None, count=None):
    """out [B, Hsel, K, *row] (module doc); ``out`` may be given (a staging buffer); ``count``
    (an int64 scalar tensor on the device) gains the number of list entries read from the host."""
    B, Hkv, ring = _check(host, dev, indices)
    Hsel, K = indices.shape[1], indices.shape[2]
    row = 1
    for n in dev.shape[3:]:
        row *= n
    if out is None:
        out = torch.empty(B, Hsel, K, *dev.shape[3:], dtype=dev.dtype, device=dev.device)
    if K == 0:
        return out
    idx = indices if indices.stride(-1) == 1 else indices.contiguous()
    grid = (triton.cdiv(K, BLOCK_R), B * Hsel)
    launcher(_gather_kernel, dev)[grid](
        host, dev, out, idx, count if count is not None else idx, int(boundary), ring, B, Hkv, K,
        idx.stride(0), idx.stride(1), *dev.stride()[:3], Hsel // Hkv, ROW=row, BLOCK_C=pow2_at_least(row),
        BLOCK_R=BLOCK_R, HAS_COUNT=count is not None, num_warps=4,
        **({} if interpreting() else {"num_stages": 1}))
    return out


def gather_host_rows_ref(host, dev, indices, boundary: int, out=None, count=None):
    """Torch reference (and the CPU path): the same rows by indexing."""
    B, Hkv, ring = _check(host, dev, indices)
    if count is not None:
        count += (indices < boundary).sum()
    Hsel = indices.shape[1]
    pos = indices.long()
    b = torch.arange(B, device=pos.device)[:, None, None]
    h = (torch.arange(Hsel, device=pos.device) // (Hsel // Hkv))[None, :, None]
    on_host = (pos < boundary)[(...,) + (None,) * (dev.dim() - 3)]
    from_dev = dev[b, h, pos % ring]
    if host.shape[0] == 0:  # nothing on the host yet
        rows = from_dev
    else:
        from_host = host.to(dev.device)[pos.clamp(0, host.shape[0] - 1), b, h]
        rows = torch.where(on_host, from_host, from_dev)
    if out is None:
        return rows
    out.copy_(rows)
    return out


__all__ = ["gather_host_rows", "gather_host_rows_ref"]
