"""The parts of a decoder step every method shares: embedding, projections, RoPE, MLP, norms,
LM head. ``tokens`` is the tokens each sequence pushes through this step (1 for decode, the
prompt for prefill, R+1 for ADORE's reconstruction); weights are read once per step.

Byte counts per layer, with n = batch·tokens rows, b_w/b_a bytes per weight/activation:
  qkv     read D·(Q+2K)·b_w + n·D·b_a, write n·(Q+2K)·b_a, FLOPs 2·n·D·(Q+2K)
  o_proj  read Q·D·b_w + n·Q·b_a,      write n·D·b_a,      FLOPs 2·n·Q·D
  mlp     read m·D·F·b_w (m = 3 SwiGLU, 2 ReLU/GELU) + activations in/out, FLOPs 2·m·n·D·F
The query's RoPE belongs to attention (kvsim.methods.attention.query_rope), the key's is here.

Host calls (``Op.issued``, per layer, eager execution) are the reference runtime's
(runtime/model.py): a norm, a linear, a residual add, silu and the gating product are one torch
call each; the qkv split and the head reshapes are views; the key's RoPE one Triton launch and
its output allocation.
"""
from __future__ import annotations

import numpy as np

from .cost import Op

ROPE_ARGS = 23  # runtime arguments of the RoPE kernel's launch (kernels/rope.py)
from .models import ModelConfig
from .topology import allgather_sent, allgather_steps, allreduce_sent, allreduce_steps
from .workload import Workload


def _linear(name: str, rows, d_in: int, d_out: int, layers: int, wl: Workload) -> Op:
    # read d_in·d_out·b_w weights + rows·d_in·b_a ; write rows·d_out·b_a
    return Op(name, "linear", flops=2 * rows * d_in * d_out,
              hbm_read=d_in * d_out * wl.b_w + rows * d_in * wl.b_a,
              hbm_write=rows * d_out * wl.b_a, gemm_rows=rows, dtype=wl.compute_dtype).scaled(layers)


def _elementwise(name: str, rows, width: int, reads: int, writes: int, flops_per: float,
                 layers: int, wl: Workload, weight_width: int = 0) -> Op:
    # read reads·rows·width·b_a (+ weight_width·b_w) ; write writes·rows·width·b_a
    return Op(name, "elementwise", flops=flops_per * rows * width,
              hbm_read=reads * rows * width * wl.b_a + weight_width * wl.b_w,
              hbm_write=writes * rows * width * wl.b_a, dtype="fp32").scaled(layers)


def _key(value):
    """A number or an array as a dictionary key (an array by its shape and bytes)."""
    return (np.shape(value), np.asarray(value, dtype=float).tobytes()) if isinstance(value, np.ndarray) else value


def layer_ops(model: ModelConfig, wl: Workload, tokens=1.0, layers: int | None = None,
              rotate_keys: bool = True) -> list[Op]:
    """Per-layer work outside attention, summed over ``layers`` (all by default).
    ``rotate_keys``: the new key is rotated before it is cached (not StreamingLLM's). Made
    once per workload and arguments (``Workload.once``)."""
    return list(wl.once(("layer_ops", model, _key(tokens), layers, rotate_keys),
                        lambda: _layer_ops(model, wl, tokens, layers, rotate_keys)))


def _layer_ops(model: ModelConfig, wl: Workload, tokens, layers: int | None, rotate_keys: bool) -> list[Op]:
    layers = model.n_layers if layers is None else layers
    rows = wl.batch * tokens
    D, Q, KV, F = model.d_model, model.q_dim, model.kv_dim, model.ffn_dim
    ops = [
        # residual add + norm: read x, residual ; write normed, residual
        _elementwise("layers/norm_attn", rows, D, 2, 2, 5.0, 1, wl, weight_width=D).issued(torch=1),
        # host: split into q, k, v and three head reshapes
        _linear("layers/attn/qkv_proj", rows, D, Q + 2 * KV, 1, wl).issued(gemm=1, torch_host=4),
    ]
    if not model.learned_positions and rotate_keys:
        # RoPE on k: read and write KV per row, ~6 FLOPs per element
        ops.append(_elementwise("layers/attn/rope", rows, KV, 1, 1, 6.0, 1, wl).issued(
            triton=1, args=ROPE_ARGS, torch_host=1))
    gated = model.mlp == "swiglu"
    ops += [
        # the linear and the residual add ; host: the heads' reshape
        _linear("layers/attn/o_proj", rows, Q, D, 1, wl).issued(gemm=1, torch=1, torch_host=1),
        _elementwise("layers/norm_mlp", rows, D, 2, 2, 5.0, 1, wl, weight_width=D).issued(torch=1),
        # host: the gate and up halves (a view)
        _linear("layers/mlp/gate_up" if gated else "layers/mlp/up", rows, D, (1 + gated) * F, 1,
                wl).issued(gemm=1, torch_host=gated),
        # silu(gate)·up: read 2F, write F per row ; ReLU/GELU: read F, write F
        (_elementwise("layers/mlp/act", rows, F, 2, 1, 5.0, 1, wl).issued(torch=2) if gated
         else _elementwise("layers/mlp/act", rows, F, 1, 1, 1.0, 1, wl).issued(torch=1)),
        _linear("layers/mlp/down", rows, F, D, 1, wl).issued(gemm=1, torch=1),  # and the residual add
    ]
    return [op.scaled(layers) for op in ops]


def model_ops(model: ModelConfig, wl: Workload, tokens=1.0, logits_tokens=1.0) -> list[Op]:
    """Embedding gather before the layers; final norm, LM head and sampling after them.
    ``logits_tokens``: rows that need logits (1 per sequence, also in prefill). Made once per
    workload and arguments (``Workload.once``)."""
    return list(wl.once(("model_ops", model, _key(tokens), _key(logits_tokens)),
                        lambda: _model_ops(model, wl, tokens, logits_tokens)))


def _model_ops(model: ModelConfig, wl: Workload, tokens, logits_tokens) -> list[Op]:
    rows, head_rows = wl.batch * tokens, wl.batch * logits_tokens
    D, V = model.d_model, model.vocab
    positions = 1 if model.learned_positions else 0
    return [
        # gather one (or two, with learned positions) embedding row per token ; host: the token
        # ids, their positions, the gather(s) and a view
        Op("embed", "elementwise", hbm_read=rows * D * wl.b_w * (1 + positions),
           hbm_write=rows * D * wl.b_a, dtype="fp32").issued(torch=3 + 3 * positions, torch_host=1),
        # host: the last token's row (a view)
        _elementwise("final_norm", head_rows, D, 1, 1, 5.0, 1, wl, weight_width=D).issued(torch=1, torch_host=1),
        # host: the product, and the logits' cast to fp32 unless already fp32
        _linear("lm_head", head_rows, D, V, 1, wl).issued(gemm=1, torch=float(wl.b_a != 4)),
        # argmax / sampling over fp32 logits: read V·4 per row, write one id (the runtime
        # returns logits: no host call counted)
        Op("sample", "elementwise", flops=2 * head_rows * V, hbm_read=head_rows * V * 4.0,
           hbm_write=head_rows * 4.0, dtype="fp32").issued(),
    ]


def weight_bytes(model: ModelConfig, wl: Workload) -> float:
    norms = (2 * model.n_layers + 1) * model.d_model
    return model.n_params * wl.b_w + norms * wl.b_w


def rope_table_bytes(model: ModelConfig, wl: Workload, positions):
    """RoPE cos and (sign-folded) sin tables, one head_dim row per position in the activation
    dtype: 2·positions·d·b_a (none with learned positions, in the weights)."""
    positions = np.asarray(positions, dtype=float)
    return 0.0 * positions if model.learned_positions else 2.0 * positions * model.head_dim * wl.b_a


def activation_bytes(model: ModelConfig, wl: Workload, tokens=1.0) -> np.ndarray:
    """Largest live activations of a step: the MLP's intermediate and fp32 logits."""
    rows = wl.batch * tokens
    mlp = rows * model.ffn_dim * model.mlp_matrices * wl.b_a
    return mlp + wl.batch * model.vocab * 4.0 + rows * model.d_model * 4 * wl.b_a


def allreduce(name: str, message_bytes, gpus: int, count=1.0) -> Op:
    """``count`` ring all-reduces of ``message_bytes`` each: a GPU sends 2·(N−1)/N of the
    message in 2·(N−1) ring steps (kvsim.topology), reads its part and the received ones
    (2× the message) and writes the sum (1×)."""
    return Op(name, "comm", comm_bytes=allreduce_sent(message_bytes, gpus), hbm_read=2 * message_bytes,
              hbm_write=message_bytes, comm_gpus=gpus, comm_steps=allreduce_steps(gpus), dtype="fp32").scaled(count)


def tensor_parallel_ops(model: ModelConfig, wl: Workload, gpus: int, tokens=1.0) -> list[Op]:
    """Megatron-style TP: an all-reduce of the hidden state after attention and after the MLP in
    every layer, one after the vocabulary-parallel embedding lookup (rows of other GPUs' part of
    the vocabulary read as zero), and a ring all-gather of the vocabulary-split fp32 logits.
    ``model`` is the full model. Made once per workload and arguments (``Workload.once``)."""
    if gpus <= 1:
        return []
    return list(wl.once(("tensor_parallel_ops", model, gpus, _key(tokens)),
                        lambda: _tensor_parallel_ops(model, wl, gpus, tokens)))


def _tensor_parallel_ops(model: ModelConfig, wl: Workload, gpus: int, tokens) -> list[Op]:
    hidden = wl.batch * tokens * model.d_model * wl.b_a
    logits = wl.batch * model.vocab * 4.0
    return [allreduce("layers/allreduce", hidden, gpus, count=2 * model.n_layers),
            allreduce("embed_allreduce", hidden, gpus),
            Op("lm_head_allgather", "comm", comm_bytes=allgather_sent(logits, gpus), hbm_write=logits,
               comm_gpus=gpus, comm_steps=allgather_steps(gpus), dtype="fp32")]
