"""Device helpers the split-K attention kernels (kernels/_attention_kernels.py) are built from:
which program this is, which cache rows it reads, the online-softmax step, the P·V step, and
the stores (o and lse, or fp32 partials; logits). Each kernel composes the ones it needs."""
import triton
import triton.language as tl

from ._common import cast

DENSE, WINDOW, GATHER = 0, 1, 2  # MODE values for launchers
_WINDOW: tl.constexpr = tl.constexpr(WINDOW)  # the same, readable inside kernels
_GATHER: tl.constexpr = tl.constexpr(GATHER)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def program_slot(NH, G: tl.constexpr, HPP: tl.constexpr):
    """(b, b as int64, head slot, its KV head as int64, its first query head) of this program."""
    pid = tl.program_id(1)
    b = pid // NH
    slot = pid % NH
    return b, b.to(tl.int64), slot, (slot * HPP // G).to(tl.int64), slot * HPP


@triton.jit
def split_bounds(n, num_splits, BLOCK_N: tl.constexpr):
    """[start, end) of this program's split of ``n`` logical rows: chunks of ceil(n/splits)
    rounded up to BLOCK_N."""
    split_len = ((n + num_splits - 1) // num_splits + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    start = tl.program_id(0) * split_len
    return start, tl.minimum(start + split_len, n)


@triton.jit
def load_q(Q, b64, h0, sqb, sqh, HPP: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr):
    """The program's HPP query rows, padded to BLOCK_G with zeros; (q, offs_g, offs_d, g_mask)."""
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    g_mask = offs_g < HPP
    q = tl.load(Q + b64 * sqb + (h0 + offs_g)[:, None] * sqh + offs_d[None, :],
                mask=g_mask[:, None], other=0.0)
    return q, offs_g, offs_d, g_mask


@triton.jit
def head_rows(K, V, b64, kvh64, skb, skh, svb, svh):
    """K and V of the program's (sequence, KV head): row j at base + j·skn (svn)."""
    return K + b64 * skb + kvh64 * skh, V + b64 * svb + kvh64 * svh


@triton.jit
def row_count(SEQ, CNT, FULL, b, slot, kvh, scb, sch, sink, recent, MODE: tl.constexpr,
              HAS_FULL: tl.constexpr):
    """(n logical rows of this head slot, window shift) by MODE:
      DENSE  seq_len[b]
      WINDOW sink + recent, or seq_len when the window covers it or FULL[kvh] (DuoAttention)
      GATHER counts[b, slot]"""
    shift = 0
    if MODE == _GATHER:
        n = tl.load(CNT + b * scb + slot * sch)
    elif MODE == _WINDOW:
        seq = tl.load(SEQ + b)
        full = sink + recent >= seq
        if HAS_FULL:
            full = full | (tl.load(FULL + kvh) != 0)
        n = tl.where(full, seq, sink + recent)
        shift = tl.where(full, 0, seq - recent - sink)
    else:
        n = tl.load(SEQ + b)
    return n, shift


@triton.jit
def cache_rows(r, r_mask, IDX, b64, slot, sib, sih, sik, shift, sink, MODE: tl.constexpr,
               PAGE: tl.constexpr):
    """Cache row of logical row r: r (DENSE); r, or r + shift past the sink (WINDOW);
    indices[b, slot, r], or with pages of PAGE rows row r % PAGE of page r // PAGE (GATHER)."""
    if MODE == _GATHER:
        if PAGE > 1:
            row = tl.load(IDX + b64 * sib + slot * sih + (r // PAGE) * sik, mask=r_mask, other=0) \
                * PAGE + r % PAGE
        else:
            row = tl.load(IDX + b64 * sib + slot * sih + r * sik, mask=r_mask, other=0)
    elif MODE == _WINDOW:
        row = tl.where(r < sink, r, r + shift)
    else:
        row = r
    return row


@triton.jit
def softmax_start(BLOCK_G: tl.constexpr, D: tl.constexpr):
    """(running max −inf, running sum 0, accumulator 0) of BLOCK_G query rows."""
    return (tl.full([BLOCK_G], float("-inf"), tl.float32), tl.zeros([BLOCK_G], tl.float32),
            tl.zeros([BLOCK_G, D], tl.float32))


@triton.jit
def softmax_step(s, m_i, l_i, EMPTY_ROWS: tl.constexpr):
    """Online softmax in base 2 over one block of scores s [BLOCK_G, BLOCK_N]: (new max, the
    factor alpha old sums are rescaled by, p = 2^(s − max), new sum). EMPTY_ROWS: a query row
    may have seen no key yet (max −inf), then it is shifted by 0 instead."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    if EMPTY_ROWS:
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s - m_use[:, None])
    return m_new, alpha, p, l_i * alpha + tl.sum(p, 1)


@triton.jit
def float_scores(q_dot, k_ptrs, r_mask, qk_scale, UPCAST: tl.constexpr):
    """q·kᵀ·scale·log2 e for one block of bf16/fp16/fp32 key rows at ``k_ptrs``."""
    k = tl.load(k_ptrs, mask=r_mask[:, None], other=0)
    if UPCAST:
        k = k.to(tl.float32)
    return tl.dot(q_dot, tl.trans(k)) * qk_scale


@triton.jit
def float_pv(acc, alpha, p, v_ptrs, r_mask, DTYPE: tl.constexpr, UPCAST: tl.constexpr):
    """acc·alpha + p·V for one block of V rows, p rounded to the rows' DTYPE first as
    flash-attention does (the interpreter keeps fp32 operands after the same rounding)."""
    v = tl.load(v_ptrs, mask=r_mask[:, None], other=0)
    if UPCAST:  # round to nearest even by hand, as _common.cast (inline: interpreted calls are slow)
        if DTYPE == tl.bfloat16:
            bits = p.to(tl.uint32, bitcast=True)
            p = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
        else:
            p = p.to(DTYPE).to(tl.float32)
        v = v.to(tl.float32)
    else:
        p = p.to(DTYPE)
    return acc * alpha[:, None] + tl.dot(p, v)


@triton.jit
def store_logits(LOGITS, s, b64, H, h0, offs_g, s_lh, r, g_mask, r_mask):
    """Natural-log logits of one block at LOGITS[b, h0 + g, r] (fp32)."""
    tl.store(LOGITS + (b64 * H + h0 + offs_g)[:, None] * s_lh + r[None, :], s * LN2,
             mask=g_mask[:, None] & r_mask[None, :])


@triton.jit
def store_result(O, LSE, PART, acc, m_i, l_i, b64, heads, offs_d, g_mask, H, num_splits,
                 n_parts, D: tl.constexpr, SINGLE: tl.constexpr, WRITE_LSE: tl.constexpr,
                 UPCAST: tl.constexpr):
    """With one split, o (and lse) of the program's query heads; else its fp32 partials,
    PART = [acc: n_parts·D | max: n_parts | sum: n_parts], part = (b, h, split)."""
    if SINGLE:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(O + (b64 * H + heads)[:, None] * D + offs_d[None, :],
                 cast(out, O.dtype.element_ty, UPCAST), mask=g_mask[:, None])
        if WRITE_LSE:
            tl.store(LSE + b64 * H + heads, (m_i + tl.log2(l_safe)) * LN2, mask=g_mask)
    else:
        part = (b64 * H + heads) * num_splits + tl.program_id(0)
        tl.store(PART + part[:, None] * D + offs_d[None, :], acc, mask=g_mask[:, None])
        tl.store(PART + n_parts * D + part, m_i, mask=g_mask)
        tl.store(PART + n_parts * (D + 1) + part, l_i, mask=g_mask)


@triton.jit
def i8_to_f16(x):
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
def i8_operand(x, UPCAST: tl.constexpr):
    """int8 rows as a dot operand: fp16 by the bit trick (the same trick in plain Triton, then
    fp32, under the interpreter, which has no inline asm)."""
    if UPCAST:
        return ((x.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0).to(tl.float32)
    return i8_to_f16(x)


@triton.jit
def rope_scores(q_lo, q_hi, k_ptrs, row, r_mask, POS, COS, SIN, s_rope, HALF: tl.constexpr):
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
