"""Costs of the attention kernels methods share: decode attention of each query head over a
set of cached rows, the split-K combine, and the KV-cache append. Mirrors ``kernels/decode.py``; the split policy and the index and score
widths are the kernel contracts (kvsim.kernel_contract).

Per KV head and layer, with r rows read, G query heads per KV head, d head dim:
  read  2·r·d·b_kv (K and V rows, + 2·r·4 for int8 scale/zero) + G·d·b_a (q) + r·b_i (indices)
  write G·d·b_a (o), or G·splits·(d+2)·4 fp32 partials that the combine kernel reads back
  FLOPs G·r·(4·d + 5)   (q·k, p·v, and ~5 for the online softmax)

What ``attention`` covers (the ops of kind "attention", the runtime's attention-only step,
runtime/method.py ``attention_only``): for the current query in every layer, its RoPE,
the method's scoring and selection work (scores, top-k, page or token lists), the gathers and
the attention over the chosen rows with its split-K combine, and work a method does per step to
prepare the rows (reconstruction, re-rotation); not the projections, the new token's K/V write
or the cache upkeep after it (``layers/attn/kv_append``, eviction), which only a whole step runs.
Host calls (``Op.issued``): each kernel's Triton launch and the allocations of its outputs.
"""
from __future__ import annotations

import numpy as np

from ..cost import Op
from ..decoder import ROPE_ARGS
from ..kernel_contract import (DENSE_TARGET_PROGRAMS, INDEX_BYTES, SCORE_BYTES, TARGET_PROGRAMS, split_count,
                               torch_topk_multiblock)
from ..models import ModelConfig
from ..workload import Workload

# runtime arguments of a launch (the host pays per argument): each split-K attention kernel
# (kernels/_attention_kernels.py: bf16 rows, int8 rows, rope-on-load, position-masked) and their
# combine (kernels/_attention.py run_attention)
ATTENTION_ARGS = {"bf16": 32, "int8": 39, "rope": 23, "masked": 23}
COMBINE_ARGS = 5


def contiguous_target(wl: Workload) -> int:
    """Split policy of attention over a contiguous cache: the dense kernel's, but the int8
    kernel keeps the wider one (kernels/decode.py, kernels/int8kv.py)."""
    return TARGET_PROGRAMS if wl.kv_dtype == "int8" else DENSE_TARGET_PROGRAMS


def kv_row_bytes(model: ModelConfig, wl: Workload) -> float:
    """One token's K and V for one KV head: 2·d·b_kv (+ int8 scale and zero point each)."""
    return 2 * model.head_dim * wl.b_kv + 2 * wl.kv_scale_bytes_per_row


def decode_attention(name: str, model: ModelConfig, wl: Workload, rows, layers,
                     kv_heads=None, query_heads_per_kv=None, index_bytes=0.0,
                     target=TARGET_PROGRAMS, gathered: bool = False, kernel=None,
                     curve: str | None = None, logits: bool = False) -> list[Op]:
    """Attention of every query head over ``rows`` cached tokens per KV head, in ``layers`` layers.

    ``kv_heads`` KV heads take part (all by default); ``query_heads_per_kv`` defaults to G.
    ``index_bytes`` per row are read when the rows are gathered through an index list;
    ``target`` is the split policy's program count (DENSE_TARGET_PROGRAMS for a contiguous cache);
    ``gathered``: the rows are scattered single rows (SparQ, ALISA, TidalDecode), not runs;
    ``kernel``: "rope" or "masked", else the cache's ("int8" or "bf16"; ATTENTION_ARGS);
    ``curve``: the kernel family that times its bytes (kvsim.roofline): "attention", the split-K
    kernels (ADORE's several query tokens included: its 64k × 8 kernel time is within 4% of
    this curve, benchmarks/results/h100-profile.json), or a variant's own;
    ``logits``: the kernel also writes every query head's fp32 logits, G·rows·4 per KV head
    (kernels/scores.py; H2O's and ALISA's score updates read them), timed on that variant's own
    curve, "attention_logits" (benchmarks/bench_floor.py), unless ``curve`` names another."""
    curve = curve or ("attention_logits" if logits else "attention")
    kv_heads = model.n_kv_heads if kv_heads is None else kv_heads
    G = model.group if query_heads_per_kv is None else query_heads_per_kv
    d, B = model.head_dim, wl.batch
    heads = B * kv_heads  # (sequence, KV head) pairs
    q_or_o = heads * G * d * wl.b_a
    splits = split_count(B, kv_heads, rows, target)
    partials = heads * G * splits * (d + 2) * 4.0
    several = splits > 1
    logits_bytes = heads * G * rows * SCORE_BYTES if logits else 0.0
    args = ATTENTION_ARGS[kernel or ("int8" if wl.kv_dtype == "int8" else "bf16")]
    main = Op(name, "attention", flops=heads * G * rows * (4 * d + 5),
              hbm_read=heads * rows * (kv_row_bytes(model, wl) + index_bytes) + q_or_o,
              hbm_write=np.where(several, partials, q_or_o) + logits_bytes, dtype=wl.compute_dtype,
              access="gather" if gathered else "contiguous", curve=curve).issued(triton=1, args=args,
                                                                    torch_host=1)  # o
    combine = Op(name + "_combine", "attention", flops=np.where(several, partials / 4 * 3, 0.0),
                 hbm_read=np.where(several, partials, 0.0), hbm_write=np.where(several, q_or_o, 0.0),
                 launches=several.astype(float), dtype="fp32").issued(
                     triton=several.astype(float), args=COMBINE_ARGS * several,
                     torch_host=several.astype(float))  # partials
    return [main.scaled(layers), combine.scaled(layers)]


def query_rope(model: ModelConfig, wl: Workload, layers=None, tokens=1.0) -> list[Op]:
    """RoPE of the step's queries, attention's first kernel (kernels/rope.py, one Triton
    launch and its output): read and write Q·b_a per row, ~6 FLOPs per element."""
    if model.learned_positions:
        return []
    layers = model.n_layers if layers is None else layers
    width = wl.batch * tokens * model.q_dim
    return [Op("layers/attn/rope_q", "attention", flops=6.0 * width, hbm_read=width * wl.b_a,
               hbm_write=width * wl.b_a, dtype="fp32").issued(triton=1, args=ROPE_ARGS, torch_host=1).scaled(layers)]


def small_kernels(name: str, kernels, layers, torch_host=0.0, kind: str = "attention") -> Op:
    """``kernels`` tiny torch kernels per layer around a method's selection (index fills, cats,
    int32 casts of lists of a few kB): each one torch call and a launch, bytes negligible."""
    return Op(name, kind, launches=kernels, dtype="fp32").issued(torch=kernels, torch_host=torch_host).scaled(layers)


def kv_append(model: ModelConfig, wl: Workload, layers=None, tokens=1.0, copies=1.0) -> Op:
    """Write the new token's K and V into the cache (``copies`` times: SparQ keeps K twice).
    read 2·KV·b_a per token ; write copies·2·KV·b_kv (+ int8 scales, + quantization FLOPs)."""
    layers = model.n_layers if layers is None else layers
    rows = wl.batch * tokens
    kv = model.kv_dim
    quant_flops = rows * 2 * kv * 4.0 if wl.kv_dtype == "int8" else 0.0  # min/max, scale, round
    # host: K and V stored one torch call each; the token's q, k, v picked out of the
    # projections and attention's output put back (four views, runtime/method.py attend)
    return Op("layers/attn/kv_append", "cache", flops=quant_flops,
              hbm_read=rows * 2 * kv * wl.b_a,
              hbm_write=rows * model.n_kv_heads * kv_row_bytes(model, wl) * copies,
              dtype="fp32").issued(torch=2 * copies, torch_host=4).scaled(layers)


def full_kv_bytes(model: ModelConfig, wl: Workload, rows=None, layers=None, kv_heads=None):
    """KV cache held: layers · batch · kv_heads · rows · kv_row_bytes."""
    rows = wl.seq if rows is None else rows
    layers = model.n_layers if layers is None else layers
    kv_heads = model.n_kv_heads if kv_heads is None else kv_heads
    return layers * wl.batch * kv_heads * rows * kv_row_bytes(model, wl)


def topk_op(name: str, candidates, picked, groups, layers, wl: Workload,
            score_bytes: float = SCORE_BYTES) -> Op:
    """Top-k over ``candidates`` scores (fp32 unless ``score_bytes`` says otherwise) for each of
    ``groups`` selections per layer, as torch.topk(sorted=False) does it.
    read candidates·s ; write picked·(s + 4) (value and int32 index); ~log2 passes of compares.
    Each layer's call is one of torch's multi-block calls (``topk_calls``) or one single-block
    call over (groups, candidates) (``topk_single_calls``); a profile with a measured ``topk``
    cost times them. The later radix passes re-read the candidates from L2 (Nsight Compute
    counts one HBM read, benchmarks/results/h100-ncu.jsonl)."""
    passes = np.log2(np.maximum(np.asarray(candidates, dtype=float), 2.0))
    calls = torch_topk_multiblock(groups, candidates).astype(float)
    return Op(name, "attention", flops=groups * candidates * passes,
              hbm_read=groups * candidates * score_bytes,
              hbm_write=groups * picked * (score_bytes + INDEX_BYTES), topk_calls=calls,
              topk_single_calls=1.0 - calls, topk_shape=(groups, candidates),
              dtype="fp32").scaled(layers)
