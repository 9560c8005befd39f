"""Device helpers of the split-K attention kernel (kernels/_attention.py): exact int8 -> fp16
conversion, and scores of keys cached before RoPE, rotated as they load."""
import triton
import triton.language as tl


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
