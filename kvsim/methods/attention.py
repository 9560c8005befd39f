"""Costs of the attention kernels methods share: decode attention of each query head over a
set of cached rows, the split-K combine, and the KV-cache append. Mirrors ``kernels/decode.py``; the split policy and the index and score
widths are the kernel contracts (kvsim.kernel_contract).

Per KV head and layer, with r rows read, G query heads per KV head, d head dim:
  read  2·r·d·b_kv (K and V rows, + 2·r·4 for int8 scale/zero) + G·d·b_a (q) + r·b_i (indices)
  write G·d·b_a (o), or G·splits·(d+2)·4 fp32 partials that the combine kernel reads back
  FLOPs G·r·(4·d + 5)   (q·k, p·v, and ~5 for the online softmax)
"""
from __future__ import annotations

import numpy as np

from ..cost import Op
from ..kernel_contract import (DENSE_TARGET_PROGRAMS, INDEX_BYTES, SCORE_BYTES, TARGET_PROGRAMS, split_count,
                               torch_topk_multiblock)
from ..models import ModelConfig
from ..workload import Workload


def contiguous_target(wl: Workload) -> int:
    """Split policy of attention over a contiguous cache: the dense kernel's, but the int8
    kernel keeps the wider one (kernels/decode.py, kernels/int8kv.py)."""
    return TARGET_PROGRAMS if wl.kv_dtype == "int8" else DENSE_TARGET_PROGRAMS


def kv_row_bytes(model: ModelConfig, wl: Workload) -> float:
    """One token's K and V for one KV head: 2·d·b_kv (+ int8 scale and zero point each)."""
    return 2 * model.head_dim * wl.b_kv + 2 * wl.kv_scale_bytes_per_row


def decode_attention(name: str, model: ModelConfig, wl: Workload, rows, layers,
                     kv_heads=None, query_heads_per_kv=None, index_bytes=0.0,
                     target=TARGET_PROGRAMS, gathered: bool = False) -> list[Op]:
    """Attention of every query head over ``rows`` cached tokens per KV head, in ``layers`` layers.

    ``kv_heads`` KV heads take part (all by default); ``query_heads_per_kv`` defaults to G.
    ``index_bytes`` per row are read when the rows are gathered through an index list;
    ``target`` is the split policy's program count (DENSE_TARGET_PROGRAMS for a contiguous cache);
    ``gathered``: the rows are scattered single rows (SparQ, ALISA, TidalDecode), not runs."""
    kv_heads = model.n_kv_heads if kv_heads is None else kv_heads
    G = model.group if query_heads_per_kv is None else query_heads_per_kv
    d, B = model.head_dim, wl.batch
    heads = B * kv_heads  # (sequence, KV head) pairs
    q_or_o = heads * G * d * wl.b_a
    splits = split_count(B, kv_heads, rows, target)
    partials = heads * G * splits * (d + 2) * 4.0
    several = splits > 1
    main = Op(name, "attention", flops=heads * G * rows * (4 * d + 5),
              hbm_read=heads * rows * (kv_row_bytes(model, wl) + index_bytes) + q_or_o,
              hbm_write=np.where(several, partials, q_or_o), dtype=wl.compute_dtype,
              access="gather" if gathered else "contiguous")
    combine = Op(name + "_combine", "attention", flops=np.where(several, partials / 4 * 3, 0.0),
                 hbm_read=np.where(several, partials, 0.0), hbm_write=np.where(several, q_or_o, 0.0),
                 launches=several.astype(float), dtype="fp32")
    return [main.scaled(layers), combine.scaled(layers)]


def kv_append(model: ModelConfig, wl: Workload, layers=None, tokens=1.0, copies=1.0) -> Op:
    """Write the new token's K and V into the cache (``copies`` times: SparQ keeps K twice).
    read 2·KV·b_a per token ; write copies·2·KV·b_kv (+ int8 scales, + quantization FLOPs)."""
    layers = model.n_layers if layers is None else layers
    rows = wl.batch * tokens
    kv = model.kv_dim
    quant_flops = rows * 2 * kv * 4.0 if wl.kv_dtype == "int8" else 0.0  # min/max, scale, round
    return Op("layers/attn/kv_append", "cache", flops=quant_flops,
              hbm_read=rows * 2 * kv * wl.b_a,
              hbm_write=rows * model.n_kv_heads * kv_row_bytes(model, wl) * copies,
              dtype="fp32").scaled(layers)


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
