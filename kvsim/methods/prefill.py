"""Prefill (time to first token): the prompt through every layer, causal flash attention.

Per layer, n = batch·T prompt rows: attention FLOPs 2·B·H·d·T·(T+1) (q·k and p·v over the causal
half) + ~2.5·B·H·T² softmax; bytes read q, k, v and write o once (flash attention keeps tiles
on chip; K/V re-reads across query tiles mostly hit L2), and the cache write 2·n·KV·b_kv.
"""
from __future__ import annotations

from ..cost import Cost, Op
from ..decoder import layer_ops, model_ops
from .attention import kv_append, query_rope


def dense_prefill(method, model, hw, wl) -> Cost:
    T, B, H, d = wl.seq, wl.batch, model.n_heads, model.head_dim
    rows = B * T
    attention = Op("layers/attn/prefill", "attention",
                   flops=2 * B * H * d * T * (T + 1) + 2.5 * B * H * T * T,
                   hbm_read=rows * (model.q_dim + 2 * model.kv_dim) * wl.b_a,
                   hbm_write=rows * model.q_dim * wl.b_a, dtype=wl.compute_dtype).scaled(model.n_layers)
    head, *tail = model_ops(model, wl, tokens=T, logits_tokens=1.0)
    ops = [head, *layer_ops(model, wl, tokens=T), kv_append(model, wl, tokens=T),
           *query_rope(model, wl, tokens=T), attention, *tail]
    resident = method.base_resident(model, hw, wl) + method.kv_resident(model, wl)
    return Cost(tuple(ops), tuple(resident))

