"""Shared plumbing for the Triton kernels: tuning tables, CPU/GPU dispatch, split policy.

Kernels are plain ``@triton.jit`` functions: compiled for CUDA tensors, or run by Triton's
interpreter on CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was imported
(:func:`interpreting`). Importing this package never touches CUDA.

Tuning: block sizes and launch options live in :data:`CONFIGS` (one entry per kernel family) and the
candidates a GPU autotuning script should try are in :data:`CANDIDATES`; set one with
:func:`set_config`. Launchers read ``CONFIGS`` at call time.
"""
from __future__ import annotations

import itertools
import math

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from kvsim.kernel_contract import split_count

LOG2E = 1.4426950408889634  # log2(e): softmaxes run in base 2 (exp2 is one instruction)

# Defaults chosen for an H100 at memory-bound decode sizes; tune with CANDIDATES on the GPU.
CONFIGS: dict[str, dict] = {
    # split-K attention over contiguous/windowed/gathered rows (decode, windowed, gather).
    # H100 (2026-11-22, B=8 and B=1 x 128k, 32/8 heads, d=128): 64/4/4, 32/4/2 and 128/4/4 tie
    # within 1% at B=8 (91% of 3.35 TB/s, SDPA 92%); at B=1 32/4/2 is 2% faster than 64/4/4.
    "attention": dict(BLOCK_N=64, num_warps=4, num_stages=4),
    # the same over int8 rows (fp16 dots on the raw int8 values). H100: 128/4/3 gives 75% of
    # peak on the int8 bytes at B=8 x 128k (1.6x faster than bf16); 64/4/3 is 11% faster at B=1.
    "attention_int8": dict(BLOCK_N=128, num_warps=4, num_stages=3),
    # merge of split-K fp32 partials
    "combine": dict(BLOCK_S=16, num_warps=4, num_stages=1),
    # SparQ step 2: approximate logits over d-major K rows i1
    "sparq_logits": dict(BLOCK_S=128, num_warps=4, num_stages=3),
    # SparQ: softmax normalisation of the logits in place
    "sparq_norm": dict(BLOCK=1024, num_warps=4, num_stages=1),
    # Quest page scores over min/max key metadata
    "quest": dict(BLOCK_P=64, num_warps=4, num_stages=3),
}


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


CANDIDATES: dict[str, list[dict]] = {
    "attention": _grid(BLOCK_N=[32, 64, 128], num_warps=[4, 8], num_stages=[2, 3, 4]),
    "attention_int8": _grid(BLOCK_N=[32, 64, 128], num_warps=[4, 8], num_stages=[2, 3, 4]),
    "combine": _grid(BLOCK_S=[8, 16, 32], num_warps=[1, 2, 4], num_stages=[1]),
    "sparq_logits": _grid(BLOCK_S=[64, 128, 256, 512], num_warps=[4, 8], num_stages=[2, 3, 4]),
    "sparq_norm": _grid(BLOCK=[512, 1024, 2048], num_warps=[4, 8], num_stages=[1]),
    "quest": _grid(BLOCK_P=[32, 64, 128], num_warps=[4, 8], num_stages=[2, 3]),
}


def set_config(kind: str, **options) -> dict:
    """Replace options of one kernel family (e.g. ``set_config("attention", BLOCK_N=128)``);
    returns the previous entry so a tuning script can restore it."""
    if kind not in CONFIGS:
        raise KeyError(f"unknown kernel family {kind!r}; choose one of {sorted(CONFIGS)}")
    unknown = set(options) - set(CONFIGS[kind])
    if unknown:
        raise KeyError(f"{kind}: unknown options {sorted(unknown)}; valid: {sorted(CONFIGS[kind])}")
    old = dict(CONFIGS[kind])
    CONFIGS[kind].update(options)
    return old


def launch_options(kind: str) -> tuple[dict, dict]:
    """(block-size constexprs, {num_warps, num_stages}) of one kernel family."""
    cfg = dict(CONFIGS[kind])
    opts = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
    return cfg, opts


def interpreting() -> bool:
    """True when Triton was imported with TRITON_INTERPRET=1 (kernels then run on CPU tensors).

    The interpreter is a process-wide choice made when triton is first imported: triton.language's
    own helpers (tl.cdiv, tl.max, ...) are built for one mode or the other."""
    return isinstance(tl.standard.cdiv, InterpretedFunction)


@triton.jit
def cast(x, dtype: tl.constexpr, EMULATE: tl.constexpr):
    """``x.to(dtype)``. With EMULATE (the interpreter, whose fp32 -> bf16 cast truncates) bf16 is
    rounded to nearest even by hand first, so CPU tests see the GPU's rounding."""
    if EMULATE:
        if dtype == tl.bfloat16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


def launcher(kernel, tensor: torch.Tensor):
    """``kernel`` ready to index with a grid, after checking that it can run on ``tensor``."""
    if not tensor.is_cuda and not interpreting():
        raise RuntimeError(
            f"{getattr(kernel, '__name__', 'kernel')}: tensors are on {tensor.device} but Triton "
            "kernels need CUDA; set TRITON_INTERPRET=1 before triton is first imported to run them "
            "on the CPU (slow), or use the matching *_ref function")
    return kernel


def pow2_at_least(n: int, floor: int = 1) -> int:
    """Smallest power of two >= n and >= floor."""
    return max(floor, 1 << (max(int(n), 1) - 1).bit_length())


def splits_for(batch: int, heads: int, rows: int, num_splits=None, target=None) -> int:
    """Split-K factor: ``num_splits`` if given, else kvsim's ``split_count`` policy (``target``
    programs: kvsim.methods.attention's TARGET_PROGRAMS unless given)."""
    if num_splits is not None:
        if int(num_splits) < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        return int(num_splits)
    if target is None:
        return int(split_count(batch, heads, max(int(rows), 1)))
    return int(split_count(batch, heads, max(int(rows), 1), target))


def max_len(seq_lens: torch.Tensor) -> int:
    """Longest sequence (one device sync; pass num_splits to avoid it in a CUDA graph)."""
    return int(seq_lens.max().item()) if seq_lens.numel() else 0


def default_scale(d: int, scale) -> float:
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def check_decode_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, ...]:
    """Shapes (B, H, Hkv, G, d) of q[B,H,d], k/v[B,Hkv,S,d]; clear errors for wrong inputs."""
    if q.dim() != 3 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"want q[B,H,d], k and v [B,Hkv,S,d]; got q{tuple(q.shape)}, "
                         f"k{tuple(k.shape)}, v{tuple(v.shape)}")
    B, H, d = q.shape
    Hkv = k.shape[1]
    if k.shape[0] != B or k.shape[3] != d or H % Hkv:
        raise ValueError(f"q{tuple(q.shape)} does not match k{tuple(k.shape)}: batch and head dim "
                         "must agree and H must be a multiple of Hkv")
    if d & (d - 1) or d < 16:
        raise ValueError(f"head dim must be a power of two >= 16, got {d}")
    return B, H, Hkv, H // Hkv, d


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Views keep their strides; only a non-unit stride along the last dim forces a copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def capture_graph(fn, repeat: int = 1, error_mode: str = "global"):
    """``fn`` run ``repeat`` times, captured in a CUDA graph after a side-stream warm-up (as
    torch.cuda.graphs asks); returns the graph's replay. A host sync inside ``fn`` raises.
    ``error_mode`` "thread_local" confines capture errors to this thread (another thread, e.g. a
    process group's watchdog, may query CUDA events meanwhile)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode=error_mode):
        for _ in range(repeat):
            fn()
    return graph.replay
