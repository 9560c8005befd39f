"""A Llama- or OPT-shaped decoder with synthetic weights, built from a kvsim ModelConfig.

Real per-layer shapes (``kvsim.models`` presets), seeded random weights scaled by 1/sqrt(fan_in)
so activations stay O(1); what is measured is the cost of a step, not its answer.
Llama family: RMSNorm, fused QKV, RoPE (rotate-half, HF convention), GQA, SwiGLU, untied LM head.
OPT family: LayerNorm before each block, biases, learned positions (offset 2), ReLU MLP, tied head.

Per layer and token, bf16: qkv read D·(Q+2K)·2 B of weights, o_proj Q·D·2 B, MLP m·D·F·2 B.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kvsim.models import ModelConfig, load_model

from . import ops

# RoPE base per family, from each model's published config.json (field rope_theta).
ROPE_THETA = (
    ("llama-3", 500000.0, "meta-llama/Meta-Llama-3-8B and Llama-3.1 config.json rope_theta"),
    ("mistral", 1000000.0, "mistralai/Mistral-7B-Instruct-v0.2 config.json rope_theta"),
    ("llama-2", 10000.0, "meta-llama/Llama-2-7b-hf config.json rope_theta (RoFormer default)"),
)
DEFAULT_ROPE_THETA = 10000.0  # RoFormer (arXiv 2104.09864) §3.2.2; Llama-2
# Llama-3.1's rope_scaling (type llama3, factor 8) only changes frequencies, not cost: not applied.
OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding offset in HF transformers
NORM_EPS = 1e-5

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {value: key for key, value in DTYPES.items()}


def torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def rope_theta(cfg: ModelConfig) -> float:
    for prefix, theta, _source in ROPE_THETA:
        if cfg.name.startswith(prefix):
            return theta
    return DEFAULT_ROPE_THETA


class Rotary:
    """RoPE tables [max_pos, d] in the model dtype: cos and sign-folded sin (−sin on the first
    half), so x·cos + rotate_half(x)·sin is one multiply-add per element (kernels/rope.py); the
    identity for learned positions."""

    def __init__(self, head_dim: int, theta: float, max_pos: int, device, dtype=torch.float32,
                 enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv[None]
        self.cos = torch.cat([angles.cos()] * 2, -1).to(device=device, dtype=dtype)
        self.sin = torch.cat([-angles.sin(), angles.sin()], -1).to(device=device, dtype=dtype)

    def __call__(self, x: torch.Tensor, pos, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate ``x[..., d]`` at positions ``pos`` (an int, or a tensor that broadcasts
        against ``x.shape[:-1]``): read and write d·b, ~3 FLOPs per element; one kernel on CUDA
        (kernels/rope.py). ``out``: a view of x's shape to write into (e.g. cache rows)."""
        if not self.enabled:
            return x if out is None else out.copy_(x)
        return ops.rope(x, pos, self.cos, self.sin, out=out)


class Decoder:
    """Synthetic-weight decoder. ``forward(tokens, positions, attend)`` runs every layer and
    hands attention to ``attend(layer, q, k, v)`` (pre-RoPE q [B,T,H,d], k/v [B,T,Hkv,d])."""

    def __init__(self, cfg: ModelConfig | str, n_layers: int | None = None, device="cpu",
                 dtype=torch.float32, seed: int = 0, max_positions: int = 4096):
        self.cfg = cfg = load_model(cfg)
        self.n_layers = cfg.n_layers if n_layers is None else int(n_layers)
        if not 1 <= self.n_layers <= cfg.n_layers:
            raise ValueError(f"n_layers must be 1..{cfg.n_layers} for {cfg.name}, got {n_layers}")
        self.device, self.dtype = torch.device(device), torch_dtype(dtype)
        self.max_positions = max_positions
        self.opt = cfg.family == "opt"
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        D, V = cfg.d_model, cfg.vocab
        self.embed = self._normal((V, D), 1.0)  # rows O(1)
        self.pos_embed = (self._normal((max_positions + OPT_POSITION_OFFSET, D), 1.0)
                          if cfg.learned_positions else None)
        self.layers = [self._layer() for _ in range(self.n_layers)]
        self.final_norm = self._norm_params()
        self.lm_head = self.embed if cfg.tied_embeddings else self._normal((V, D), D ** -0.5)
        self.rotary = Rotary(cfg.head_dim, rope_theta(cfg), max_positions, self.device, self.dtype,
                             enabled=not cfg.learned_positions)

    # ---- weights ------------------------------------------------------------------------------
    def _normal(self, shape, std: float) -> torch.Tensor:
        """N(0, std²) drawn in place in the model's dtype: no fp32 temporaries, whose freed blocks
        would leave holes in torch's caching allocator (2.5–5 GB at max batch on llama-2-7b/13b,
        benchmarks/allocator_holes.py) that a runtime loading a checkpoint does not have."""
        w = torch.empty(shape, device=self.device, dtype=self.dtype)
        return w.normal_(0.0, std, generator=self._gen)

    def _linear(self, d_out: int, d_in: int) -> tuple:
        bias = torch.zeros(d_out, device=self.device, dtype=self.dtype) if self.opt else None
        return self._normal((d_out, d_in), d_in ** -0.5), bias

    def _norm_params(self) -> tuple:
        D = self.cfg.d_model
        ones = torch.ones(D, device=self.device, dtype=self.dtype)
        return ones, (torch.zeros_like(ones) if self.cfg.norm == "layernorm" else None)

    def _layer(self) -> dict:
        c = self.cfg
        up = 2 * c.ffn_dim if c.mlp == "swiglu" else c.ffn_dim  # gate and up fused for SwiGLU
        return {"norm1": self._norm_params(), "qkv": self._linear(c.q_dim + 2 * c.kv_dim, c.d_model),
                "o": self._linear(c.d_model, c.q_dim), "norm2": self._norm_params(),
                "up": self._linear(up, c.d_model), "down": self._linear(c.d_model, c.ffn_dim)}

    @property
    def weight_bytes(self) -> int:
        tensors = [self.embed, self.lm_head] + ([self.pos_embed] if self.pos_embed is not None else [])
        for layer in self.layers:
            tensors += [t for pair in layer.values() for t in pair if t is not None]
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())

    # ---- forward ------------------------------------------------------------------------------
    def norm(self, x: torch.Tensor, params: tuple) -> torch.Tensor:
        weight, bias = params
        if self.cfg.norm == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), weight, bias, NORM_EPS)
        return F.rms_norm(x, (x.shape[-1],), weight, NORM_EPS)  # fused, fp32 accumulation

    def embed_tokens(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens, positions [B,T] -> x [B,T,D]; read one (OPT: two) D-row per token."""
        x = self.embed[tokens]
        if self.pos_embed is not None:
            x = x + self.pos_embed[positions + OPT_POSITION_OFFSET]
        return x

    def mlp(self, h: torch.Tensor, p: dict) -> torch.Tensor:
        up = F.linear(h, *p["up"])
        if self.cfg.mlp == "swiglu":
            gate, up = up.chunk(2, dim=-1)
            act = F.silu(gate).mul_(up)  # in place: the fused up (2F) and act (F) live, 3F a row
        else:
            act = F.relu(up) if self.cfg.mlp == "relu" else F.gelu(up)
        return F.linear(act, *p["down"])

    def layer(self, i: int, x: torch.Tensor, attend) -> torch.Tensor:
        c, p = self.cfg, self.layers[i]
        B, T, _ = x.shape
        qkv = F.linear(self.norm(x, p["norm1"]), *p["qkv"])
        q, k, v = qkv.split([c.q_dim, c.kv_dim, c.kv_dim], dim=-1)
        o = attend(i, q.reshape(B, T, c.n_heads, c.head_dim), k.reshape(B, T, c.n_kv_heads, c.head_dim),
                   v.reshape(B, T, c.n_kv_heads, c.head_dim))
        del qkv, q, k, v  # dead once attended: the MLP holds the input x, the new x and its own
        x = x + self.reduce(F.linear(o.reshape(B, T, c.q_dim).to(x.dtype), *p["o"]))
        del o  # (kvsim.decoder.activation_bytes: 4·D + the MLP's intermediates a row)
        return x + self.reduce(self.mlp(self.norm(x, p["norm2"]), p))

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """The output projections' result; a tensor-parallel shard sums its partial over the
        GPUs here (runtime/tp.py: one all-reduce after attention, one after the MLP)."""
        return partial

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head for x [B,D] -> fp32 logits [B,V] (reads V·D weights)."""
        return F.linear(self.norm(x, self.final_norm), self.lm_head).float()

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, attend) -> torch.Tensor:
        """Run tokens [B,T] at positions [B,T] through every layer; logits of the last token."""
        x = self.embed_tokens(tokens, positions)
        for i in range(self.n_layers):
            x = self.layer(i, x, attend)
        return self.logits(x[:, -1])

