"""Device helpers of the split-K attention kernels (kernels/_attention.py, kernels/int8kv.py):
a program's rows, its output or partials, exact int8 -> fp16 conversion, and scores of keys
cached before RoPE, rotated as they load."""
import triton
import triton.language as tl

from ._common import cast

_LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _head_slot(NH, G: tl.constexpr, HPP: tl.constexpr):
    """This program's sequence b and head slot (axis 1 of the grid), the slot's KV head, its first
    query head h0, and b and the KV head as int64 for addressing."""
    pid = tl.program_id(1)
    b = pid // NH
    slot = pid % NH
    kvh = slot * HPP // G
    return b, slot, kvh, slot * HPP, b.to(tl.int64), kvh.to(tl.int64)


@triton.jit
def _query(Q, b64, h0, sqb, sqh, HPP: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr):
    """The slot's HPP query rows, padded with zeros to BLOCK_G: (q, row offsets, dim offsets,
    row mask)."""
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    g_mask = offs_g < HPP
    q = tl.load(Q + b64 * sqb + (h0 + offs_g)[:, None] * sqh + offs_d[None, :],
                mask=g_mask[:, None], other=0.0)
    return q, offs_g, offs_d, g_mask


@triton.jit
def _split_bounds(n, num_splits, pid_s, BLOCK_N: tl.constexpr):
    """Rows [start, end) of split ``pid_s``: ceil(n/splits) rounded up to BLOCK_N each."""
    split_len = ((n + num_splits - 1) // num_splits + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    start = pid_s * split_len
    end = tl.minimum(start + split_len, n)
    return start, end


@triton.jit
def _store_result(acc, m_i, l_i, O, LSE, PART, b64, heads, g_mask, offs_d, pid_s, num_splits, n_parts,
                  H, D: tl.constexpr, SINGLE: tl.constexpr, WRITE_LSE: tl.constexpr, UPCAST: tl.constexpr):
    """One split: o = acc / l (and lse) for the program's query heads; several: the fp32 partials
    PART = [acc: n_parts·D | max: n_parts | sum: n_parts], part = (b, h, split)."""
    if SINGLE:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(O + (b64 * H + heads)[:, None] * D + offs_d[None, :],
                 cast(out, O.dtype.element_ty, UPCAST), mask=g_mask[:, None])
        if WRITE_LSE:
            tl.store(LSE + b64 * H + heads, (m_i + tl.log2(l_safe)) * _LN2,
                     mask=g_mask)
    else:
        part = (b64 * H + heads) * num_splits + pid_s
        tl.store(PART + part[:, None] * D + offs_d[None, :], acc, mask=g_mask[:, None])
        tl.store(PART + n_parts * D + part, m_i, mask=g_mask)
        tl.store(PART + n_parts * (D + 1) + part, l_i, mask=g_mask)


@triton.jit
def _i8_to_f16(x):
    """int8 -> fp16, exact, four at a time: the biased byte x + 128 is placed under the exponent
    of 1024 (fp16 0x6400 | byte = 1024 + byte), then 1152 = 1024 + 128 is subtracted."""
    return tl.inline_asm_elementwise(
        asm="""{
        .reg .b32 t, m;
        xor.b32 t, $2, 0x80808080;
        mov.b32 m, 0x64806480;
        prmt.b32 $0, t, 0x64646464, 0x4140;
        prmt.b32 $1, t, 0x64646464, 0x4342;
        sub.f16x2 $0, $0, m;
        sub.f16x2 $1, $1, m;
        }""",
        constraints="=r,=r,r", args=[x], dtype=tl.float16, is_pure=True, pack=4)


@triton.jit
def _rope_scores(q_lo, q_hi, k_ptrs, row, r_mask, POS, COS, SIN, s_rope, HALF: tl.constexpr):
    """(q_lo|q_hi)·rope(k)ᵀ for pre-RoPE key rows at ``k_ptrs`` (first half), positions POS[row]."""
    offs = tl.arange(0, HALF)
    k_lo = tl.load(k_ptrs, mask=r_mask[:, None], other=0).to(tl.float32)
    k_hi = tl.load(k_ptrs + HALF, mask=r_mask[:, None], other=0).to(tl.float32)
    t = tl.load(POS + row, mask=r_mask, other=0).to(tl.int64)[:, None] * s_rope + offs[None, :]
    c = tl.load(COS + t, mask=r_mask[:, None], other=0).to(tl.float32)
    sn = tl.load(SIN + t, mask=r_mask[:, None], other=0).to(tl.float32)
    r_lo = (k_lo * c - k_hi * sn).to(q_lo.dtype)
    r_hi = (k_hi * c + k_lo * sn).to(q_lo.dtype)
    return tl.dot(q_lo, tl.trans(r_lo)) + tl.dot(q_hi, tl.trans(r_hi))
