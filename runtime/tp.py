"""Tensor parallelism (Megatron-LM, arXiv 1909.08053 §3) over torch.distributed, one process per
GPU (NCCL) or per CPU rank (gloo, tests). Each rank builds the single-GPU runtime on its shard:

- the decoder of ``ModelConfig.sharded(N)``: column-parallel QKV (its H/N query heads and Hkv/N
  KV heads, contiguous) and gate/up (F/N columns each), row-parallel o_proj and down (their Q/N
  and F/N input columns; OPT's biases on rank 0 only), the output of each summed over the ranks
  by one all-reduce of B·T·D·b bytes (``Decoder.reduce``: after attention and after the MLP);
- a vocabulary-parallel embedding (V/N rows; rows of other ranks read as zero, summed by one
  all-reduce of B·T·D·b) and LM head (V/N logits gathered: (N−1)/N·B·V·4 bytes per rank);
- the method on its Hkv/N KV heads (runtime/tp_methods.py says what each rank keeps).

Weights are sliced from the single-GPU decoder's synthetic weights (same seed, same draws), and
the synthetic prefill draws the full model's K/V and keeps this rank's heads, so N ranks compute
what one process computes (tests/test_tp_runtime.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from kvsim.models import ModelConfig, load_model

from .cache import CacheSpec
from .engine import Engine
from .model import Decoder, torch_dtype
from .tp_methods import gathered_prefill_scores, kv_head_layout, tp_method

class Comm:
    """This rank's collectives over the default process group (or ``group``)."""

    def __init__(self, group=None):
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if not t.is_contiguous():  # a collective on a strided view would not write the view
            raise ValueError("all_reduce needs a contiguous tensor")
        dist.all_reduce(t, group=self.group)  # in place, summed
        return t

    def all_gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's ``t`` concatenated along ``dim`` in rank order."""
        t = t.contiguous()
        if t.device.type == "cuda":
            out = torch.empty((self.world, *t.shape), dtype=t.dtype, device=t.device)
            dist.all_gather_into_tensor(out, t, group=self.group)  # one NCCL call, graph-capturable
            parts = out.unbind(0)
        else:  # gloo has no all_gather_into_tensor
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t, group=self.group)
        return torch.cat(parts, dim)

    def gather_heads(self, t: torch.Tensor, dim: int, layout: list[list[int]]) -> torch.Tensor:
        """Every rank's heads along ``dim`` (rank r holds global heads ``layout[r]`` in that
        order), in global head order."""
        order = torch.tensor([h for heads in layout for h in heads], device=t.device)
        return self.all_gather(t, dim).index_select(dim, torch.argsort(order))


def check_shardable(cfg: ModelConfig, world: int) -> None:
    """The runtime splits heads, KV heads, FFN columns and vocabulary evenly (no replicated KV heads)."""
    for what, count in (("query heads", cfg.n_heads), ("KV heads", cfg.n_kv_heads),
                        ("FFN columns", cfg.ffn_dim), ("vocabulary rows", cfg.vocab)):
        if count % world:
            raise ValueError(f"{cfg.name}: {count} {what} do not split evenly over {world} ranks")


def head_rows(heads: list[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    """Indices of the rows (or columns) of ``heads`` in a [heads·d, ...] projection."""
    return torch.tensor([offset + h * head_dim + j for h in heads for j in range(head_dim)])


def query_heads(kv_heads: list[int], group: int) -> list[int]:
    return [h * group + g for h in kv_heads for g in range(group)]


def part(t: torch.Tensor, dim: int, rank: int, world: int) -> torch.Tensor:
    """Rank's contiguous 1/world slice of ``t`` along ``dim`` (a copy: the full tensor is freed)."""
    size = t.shape[dim] // world
    return t.narrow(dim, rank * size, size).contiguous()


class VocabParallelEmbedding:
    """Rows [first, first + V/N) of the embedding table; ``table[tokens]`` -> [..., D] summed over
    the ranks (Megatron's VocabParallelEmbedding): read one D-row per token, all-reduce B·T·D·b."""

    def __init__(self, rows: torch.Tensor, first: int, comm: Comm):
        self.weight, self.first, self.comm = rows, first, comm

    def __getitem__(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.first
        inside = (local >= 0) & (local < self.weight.shape[0])
        x = self.weight[local.clamp(0, self.weight.shape[0] - 1)] * inside[..., None].to(self.weight.dtype)
        return self.comm.all_reduce(x)


class TPDecoder(Decoder):
    """The decoder of one rank; ``cfg`` is the shard's (heads, FFN, vocabulary / N),
    ``full_cfg`` the model's. ``kv_heads``: the global KV heads this rank holds, in its order
    (default the contiguous Hkv/N from rank·Hkv/N), with their G query heads each."""

    def __init__(self, cfg: ModelConfig | str, comm: Comm, n_layers=None, device="cpu",
                 dtype=torch.float32, seed: int = 0, max_positions: int = 4096, kv_heads: list[int] | None = None):
        full = load_model(cfg)
        check_shardable(full, comm.world)
        self.comm, self.full_cfg = comm, full
        h = full.n_kv_heads // comm.world
        self.kv_heads = list(range(comm.rank * h, (comm.rank + 1) * h)) if kv_heads is None else list(kv_heads)
        if len(self.kv_heads) != h:
            raise ValueError(f"rank {comm.rank} must hold {h} KV heads, got {self.kv_heads}")
        self.query_heads = query_heads(self.kv_heads, full.group)
        super().__init__(full, n_layers, device, dtype, seed, max_positions)  # full draws, sliced per layer
        r, N = comm.rank, comm.world
        head = part(self.lm_head, 0, r, N)
        self.embed = VocabParallelEmbedding(head if full.tied_embeddings else part(self.embed, 0, r, N),
                                            r * full.vocab // N, comm)
        self.lm_head = head
        self.cfg = full.sharded(N)

    def _layer(self) -> dict:
        full = super()._layer()  # the single-GPU layer's draws, in the same order
        c, r, N = self.cfg, self.comm.rank, self.comm.world
        q_rows, kv_rows = head_rows(self.query_heads, c.head_dim), head_rows(self.kv_heads, c.head_dim)
        qkv_rows = torch.cat([q_rows, c.q_dim + kv_rows, c.q_dim + c.kv_dim + kv_rows]).to(self.device)
        qkv = lambda t: t.index_select(0, qkv_rows)  # noqa: E731
        up = lambda t: torch.cat([part(s, 0, r, N) for s in t.chunk(2)]) if c.mlp == "swiglu" else part(t, 0, r, N)  # noqa: E731
        row_bias = lambda b: None if b is None else (b if r == 0 else torch.zeros_like(b))  # noqa: E731
        (w_qkv, b_qkv), (w_o, b_o), (w_up, b_up), (w_down, b_down) = (full[k] for k in ("qkv", "o", "up", "down"))
        return {"norm1": full["norm1"], "norm2": full["norm2"],
                "qkv": (qkv(w_qkv), None if b_qkv is None else qkv(b_qkv)),
                "o": (w_o.index_select(1, q_rows.to(self.device)), row_bias(b_o)),
                "up": (up(w_up), None if b_up is None else up(b_up)),
                "down": (part(w_down, 1, r, N), row_bias(b_down))}

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(partial.contiguous())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's V/N fp32 logits, gathered into [B, V]."""
        return self.comm.all_gather(super().logits(x), dim=-1)

    @property
    def weight_bytes(self) -> int:
        tensors = [self.embed.weight, self.lm_head] + ([self.pos_embed] if self.pos_embed is not None else [])
        for layer in self.layers:
            tensors += [t for pair in layer.values() for t in pair if t is not None]
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


class TPEngine(Engine):
    """``kvsim.runtime.engine.Engine`` on one rank: same interface, ``cfg`` the full model's (token ids
    over the whole vocabulary), the cache and the method on this rank's KV heads."""

    def __init__(self, model_name="llama-3.1-8b", method: str = "dense", params: dict | None = None,
                 batch: int = 1, max_seq: int = 4096, n_layers=None, device=None, dtype=None,
                 kv_dtype: str | None = None, seed: int = 0, comm: Comm | None = None):
        comm = comm or Comm()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and device.index is None:  # this rank's GPU, explicitly: seeded
            device = torch.device("cuda", torch.cuda.current_device())  # generators are per device
        dtype = dtype or ("bf16" if device.type == "cuda" else "fp32")
        layout = kv_head_layout(method, load_model(model_name).n_kv_heads, comm.world)
        decoder = TPDecoder(model_name, comm, n_layers, device, torch_dtype(dtype), seed, max_positions=max_seq,
                            kv_heads=layout[comm.rank])
        super().__init__(model_name, method, params, batch, max_seq, n_layers, device, dtype,
                         kv_dtype=kv_dtype, seed=seed, decoder=decoder)
        self.comm, self.cfg, self.layout = comm, decoder.full_cfg, layout

    def gather_heads(self, t: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's query heads of ``t`` (e.g. an attention output [B, H/N, d]) in global order."""
        return self.comm.gather_heads(t, dim, [query_heads(heads, self.cfg.group) for heads in self.layout])

    @property
    def spec(self) -> CacheSpec:
        shard = self.model.cfg
        return super().spec.with_(n_heads=shard.n_heads, n_kv_heads=shard.n_kv_heads)

    # Engine.prefill_synthetic's draws at the full model's shapes, this rank's heads kept
    def _new_method(self):
        return tp_method(self.method_name, self.spec, self.params, self.model.rotary, self.pcie,
                         self.comm, self.cfg, self.layout)

    def _prefill_layers(self, seq: int, gen: torch.Generator) -> None:
        with gathered_prefill_scores(self.method, self.comm, self.layout):
            super()._prefill_layers(seq, gen)

    def _prefill_layer(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        mine = self.model.kv_heads
        self.method.prefill(layer, k[:, mine].contiguous(), v[:, mine].contiguous())

    def _own_query_heads(self, q: torch.Tensor) -> torch.Tensor:
        return q[:, self.model.query_heads].contiguous()
