"""Model presets: shapes from each model's published ``config.json``; a user's YAML by path."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import KvsimError
from .yamlfile import read_mapping, validated


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: Literal["llama", "opt"]
    n_layers: int = Field(gt=0)
    d_model: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)
    max_context: int = Field(gt=0)
    mlp: Literal["swiglu", "relu", "gelu"]
    norm: Literal["rmsnorm", "layernorm"]
    tied_embeddings: bool = False
    learned_positions: bool = False  # OPT: a position-embedding table instead of RoPE
    source: str = Field(min_length=3)

    @property
    def group(self) -> int:
        """Query heads per KV head (G)."""
        return self.n_heads // self.n_kv_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.mlp == "swiglu" else 2

    @property
    def layer_params(self) -> int:
        attn = self.d_model * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.d_model
        mlp = self.mlp_matrices * self.d_model * self.ffn_dim
        return attn + mlp

    @property
    def embedding_params(self) -> int:
        positions = self.max_context * self.d_model if self.learned_positions else 0
        return self.vocab * self.d_model + positions

    @property
    def head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.d_model

    @property
    def n_params(self) -> int:
        return self.n_layers * self.layer_params + self.embedding_params + self.head_params

    def sharded(self, gpus: int) -> "ModelConfig":
        """What one of ``gpus`` tensor-parallel GPUs holds (Megatron-LM: heads, FFN columns and
        vocabulary split; KV heads replicated when there are fewer than GPUs)."""
        if gpus == 1:
            return self
        if self.n_heads % gpus:
            raise KvsimError(f"{self.name}: {self.n_heads} query heads do not split over {gpus} GPUs")
        kv_heads = self.n_kv_heads // gpus if self.n_kv_heads >= gpus else 1
        if (self.n_kv_heads >= gpus and self.n_kv_heads % gpus) or (self.n_kv_heads < gpus and gpus % self.n_kv_heads):
            raise KvsimError(f"{self.name}: {self.n_kv_heads} KV heads do not split over {gpus} GPUs")
        return self.model_copy(update=dict(
            name=f"{self.name}/tp{gpus}", n_heads=self.n_heads // gpus, n_kv_heads=kv_heads,
            ffn_dim=-(-self.ffn_dim // gpus), vocab=-(-self.vocab // gpus)))


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


_LLAMA2 = dict(family="llama", mlp="swiglu", norm="rmsnorm", vocab=32000, head_dim=128)
_LLAMA3 = dict(family="llama", mlp="swiglu", norm="rmsnorm", vocab=128256, head_dim=128)
_OPT = dict(family="opt", mlp="relu", norm="layernorm", vocab=50272, head_dim=128,
            tied_embeddings=True, learned_positions=True, max_context=2048)

PRESETS: dict[str, ModelConfig] = {m.name: m for m in [
    ModelConfig(name="llama-2-7b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32,
                ffn_dim=11008, max_context=4096, source=_hf("meta-llama/Llama-2-7b-hf"), **_LLAMA2),
    ModelConfig(name="llama-2-7b-32k", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32,
                ffn_dim=11008, max_context=32768, source=_hf("togethercomputer/LLaMA-2-7B-32K"), **_LLAMA2),
    ModelConfig(name="llama-2-13b", n_layers=40, d_model=5120, n_heads=40, n_kv_heads=40,
                ffn_dim=13824, max_context=4096, source=_hf("meta-llama/Llama-2-13b-hf"), **_LLAMA2),
    ModelConfig(name="llama-3-8b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8,
                ffn_dim=14336, max_context=8192, source=_hf("meta-llama/Meta-Llama-3-8B"), **_LLAMA3),
    ModelConfig(name="llama-3.1-8b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8,
                ffn_dim=14336, max_context=131072, source=_hf("meta-llama/Llama-3.1-8B"), **_LLAMA3),
    ModelConfig(name="llama-3.1-70b", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8,
                ffn_dim=28672, max_context=131072, source=_hf("meta-llama/Llama-3.1-70B"), **_LLAMA3),
    ModelConfig(name="mistral-7b-v0.2", family="llama", mlp="swiglu", norm="rmsnorm", n_layers=32,
                d_model=4096, n_heads=32, n_kv_heads=8, head_dim=128, ffn_dim=14336, vocab=32000,
                max_context=32768, source=_hf("mistralai/Mistral-7B-Instruct-v0.2")),
    ModelConfig(name="opt-6.7b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32,
                ffn_dim=16384, source=_hf("facebook/opt-6.7b"), **_OPT),
    ModelConfig(name="opt-13b", n_layers=40, d_model=5120, n_heads=40, n_kv_heads=40,
                ffn_dim=20480, source=_hf("facebook/opt-13b"), **_OPT),
    ModelConfig(name="opt-30b", n_layers=48, d_model=7168, n_heads=56, n_kv_heads=56,
                ffn_dim=28672, source=_hf("facebook/opt-30b"), **_OPT),
]}

DEFAULT_MODEL = "llama-3.1-8b"


def load_model(name: str | ModelConfig) -> ModelConfig:
    """A preset by name, or a YAML file with the ModelConfig fields."""
    if isinstance(name, ModelConfig):
        return name
    if name in PRESETS:
        return PRESETS[name]
    if name.endswith((".yaml", ".yml")):
        return _load_yaml(Path(name))
    raise KvsimError(f"unknown model '{name}'; choose one of: {', '.join(PRESETS)} (or a YAML path)")


def first_layers(name: str | ModelConfig, layers: int | None) -> ModelConfig:
    """The model cut to its first ``layers`` layers, as the runtime cuts it (None: whole)."""
    model = load_model(name)
    if layers is None or layers == model.n_layers:
        return model
    if not 1 <= layers <= model.n_layers:
        raise KvsimError(f"layers must be 1..{model.n_layers} for {model.name}, got {layers}")
    return model.model_copy(update={"n_layers": int(layers)})


def _load_yaml(path: Path) -> ModelConfig:
    model = validated(ModelConfig, read_mapping(path, "model file"), path)
    if model.n_heads % model.n_kv_heads:
        raise KvsimError(f"{path}: n_heads ({model.n_heads}) must be a multiple of n_kv_heads")
    return model
