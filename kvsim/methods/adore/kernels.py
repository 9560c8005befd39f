"""ADORE's per-step bookkeeping as single kernels (arXiv 2407.02328; the controller's form is
kvsim's choice, kvsim.methods.adore). :func:`adore_score`, the token score: σ = sigmoid(w2 · relu(W1 (z + p))) for a GRU state z [h] and the
sinusoidal encoding p of the token's position (sin of pos·freq, then cos; arXiv 1706.03762 §3.5),
written straight into the score table. torch runs it as about fourteen kernels (a fill, the
encoding's five, an add, two matrix-vector products, relu, sigmoid, casts, the store).

One program per row: read h·b (z) + h²·b + h·b (W1, w2) + h/2·4 (freq), write 4. Math in fp32
(torch rounds z + p and the hidden layer to z's dtype: scores differ in the last bits).
:func:`adore_release`, the release of the lowest-scored cached token and the choice of the next.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvsim.kernels._common import launcher, pow2_at_least

BLOCK_ROWS = 32  # rows of W1 per step of the hidden layer


@triton.jit
def _score_kernel(Z, POS, FREQ, W1, W2, OUT, s_z, s_pos, s_w1, s_out,
                  HID: tl.constexpr, HALF: tl.constexpr, BLOCK_R: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, HID)
    pos = tl.load(POS + row * s_pos).to(tl.float32)
    freq = tl.load(FREQ + cols % HALF)
    angle = pos * freq  # fp32, as torch forms it; reduced to [−π, π] before sin/cos (Cody–Waite:
    # 2π = C1 + C2 with C1 exact in 8 bits, so k·C1 is exact for k < 2^16, angles up to ~4e5)
    k = tl.floor(angle * 0.15915494309189535 + 0.5)
    angle = (angle - k * 6.28125) - k * 0.0019353071795864769
    enc = tl.where(cols < HALF, tl.sin(angle), tl.cos(angle))
    u = tl.load(Z + row * s_z + cols).to(tl.float32) + enc
    total = 0.0
    for r0 in range(0, HID, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        w = tl.load(W1 + rows[:, None] * s_w1 + cols[None, :]).to(tl.float32)
        hidden = tl.maximum(tl.sum(w * u[None, :], 1), 0.0)
        total += tl.sum(hidden * tl.load(W2 + rows).to(tl.float32), 0)
    tl.store(OUT + row * s_out, 1.0 / (1.0 + tl.exp(-total)))


def _check(z, positions, freq, w1, w2, out):
    R, hid = z.shape
    if (w1.shape != (hid, hid) or w2.shape != (1, hid) or freq.shape != (hid // 2,)
            or positions.shape != (R,) or out.shape != (R,) or hid % 2 or hid != pow2_at_least(hid)):
        raise ValueError(f"want z [R, h] (h a power of two), positions [R], freq [h/2], W1 [h, h], "
                         f"w2 [1, h], out [R]; got z{tuple(z.shape)}, positions{tuple(positions.shape)}, "
                         f"freq{tuple(freq.shape)}, W1{tuple(w1.shape)}, w2{tuple(w2.shape)}, out{tuple(out.shape)}")


def adore_score(z, positions, freq, w1, w2, out) -> torch.Tensor:
    """out[r] = σ(w2 · relu(W1 (z[r] + p(positions[r])))) in fp32, written in place (out may be
    a strided column of the score table); returns out."""
    _check(z, positions, freq, w1, w2, out)
    if z.stride(-1) != 1 or w1.stride(-1) != 1 or w2.stride(-1) != 1 or freq.stride(-1) != 1:
        raise ValueError("z, W1, w2 and freq need a contiguous last dim")
    R, hid = z.shape
    launcher(_score_kernel, z)[(R,)](
        z, positions, freq, w1, w2, out, z.stride(0), positions.stride(0), w1.stride(0), out.stride(0),
        HID=hid, HALF=hid // 2, BLOCK_R=min(BLOCK_ROWS, hid), num_warps=4)
    return out


def adore_score_ref(z, positions, freq, w1, w2, out) -> torch.Tensor:
    """Torch reference of :func:`adore_score` (the formula kvsim/methods/adore/runtime.py Controller.score
    scores the prompt with)."""
    _check(z, positions, freq, w1, w2, out)
    angle = positions.float()[:, None] * freq
    p = torch.cat([angle.sin(), angle.cos()], -1).to(z.dtype)
    hidden = torch.relu(torch.nn.functional.linear(z + p, w1))
    out.copy_(torch.sigmoid(torch.nn.functional.linear(hidden, w2)[:, 0].float()))
    return out


@triton.jit
def _release_kernel(SLOT_POS, SLOT_SCORE, REBUILD, SCORE, INSERT, n, m,
                    s_sp, s_ss, s_reb, s_sc, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    slot = tl.load(INSERT + b).to(tl.int64)
    old = tl.load(SLOT_POS + b * s_sp + slot).to(tl.int64)
    tl.store(REBUILD + b * s_reb + old, tl.load(SCORE + b * s_sc + old))
    tl.store(SLOT_POS + b * s_sp + slot, n)
    new = tl.load(SCORE + b * s_sc + n)
    tl.store(SLOT_SCORE + b * s_ss + slot, new)
    best = float("inf")
    where = 0
    for off in range(0, m, BLOCK):  # the next step's slot: the lowest-scored cached token
        j = off + tl.arange(0, BLOCK)
        held = tl.load(SLOT_SCORE + b * s_ss + j, mask=j < m, other=float("inf"))
        held = tl.where(j == slot, new, held)  # this program's own store, not re-read
        low = tl.min(held, 0)
        better = low < best  # strict: an earlier block keeps a tie, as torch.argmin
        where = tl.where(better, off + tl.argmin(held, 0), where)
        best = tl.where(better, low, best)
    tl.store(INSERT + b, where.to(INSERT.dtype.element_ty))


def _check_release(slot_pos, slot_score, rebuild_score, score, insert):
    B, m = slot_pos.shape
    if (slot_score.shape != (B, m) or insert.shape != (B,) or rebuild_score.shape != score.shape
            or score.shape[0] != B):
        raise ValueError(f"want slot_pos, slot_score [B, m], rebuild_score, score [B, S], insert [B]; "
                         f"got {tuple(slot_pos.shape)}, {tuple(slot_score.shape)}, "
                         f"{tuple(rebuild_score.shape)}, {tuple(score.shape)}, {tuple(insert.shape)}")


def adore_release(slot_pos, slot_score, rebuild_score, score, insert, n: int) -> None:
    """In place, per sequence b, once the cache is full: the token in slot insert[b] is released
    (rebuild_score[old] = score[old], finite: released); token n takes the slot (slot_pos,
    slot_score); insert[b] becomes the next step's slot, the argmin of slot_score (ties: the
    lowest). One program per sequence: read m·4 bytes, write a few; torch takes ~8 kernels."""
    _check_release(slot_pos, slot_score, rebuild_score, score, insert)
    B, m = slot_pos.shape
    launcher(_release_kernel, score)[(B,)](
        slot_pos, slot_score, rebuild_score, score, insert, n, m, slot_pos.stride(0),
        slot_score.stride(0), rebuild_score.stride(0), score.stride(0),
        BLOCK=min(1024, pow2_at_least(m)), num_warps=4)


def adore_release_ref(slot_pos, slot_score, rebuild_score, score, insert, n: int) -> None:
    """Torch reference of :func:`adore_release`."""
    _check_release(slot_pos, slot_score, rebuild_score, score, insert)
    slot = insert[:, None].long()
    old = slot_pos.gather(1, slot).long()
    rebuild_score.scatter_(1, old, score.gather(1, old))
    slot_pos.scatter_(1, slot, torch.full_like(slot, n).to(slot_pos.dtype))
    slot_score.scatter_(1, slot, score[:, n:n + 1].expand_as(slot).contiguous())
    insert.copy_(slot_score.argmin(-1))
