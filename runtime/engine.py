"""One decode step of a method on the synthetic decoder.

    engine = Engine("llama-3.1-8b", "sparq", {"k": 512}, batch=4, max_seq=32768, n_layers=4)
    engine.prefill_synthetic(32000)        # random K/V for 32000 tokens; params resolved at S=32001
    logits = engine.step()                 # one decode step: [B, vocab] fp32; context grows by 1
    engine.attention_only_step()           # attention (with selection/scoring) in every layer only
    engine.pcie_bytes                      # {"h2d": ..., "d2h": ...} moved so far (offload)

Prefill is synthetic (we measure decode): seeded random pre-RoPE keys and values, the same for
every method with the same seed, so a sparse method with a full budget reproduces dense.
"""
from __future__ import annotations

import torch

from .cache import CacheSpec
from .model import DTYPE_NAMES, Decoder, torch_dtype
from .registry import METHODS, resolve
from .transfers import PcieCounter


def offload_fraction(offload) -> float:
    """False/None -> 0 (all on the device); True -> 1.0 (FlexGen-style: every past token on the
    host, the current one on the device); a float in (0, 1] -> that fraction of tokens."""
    if offload is None or offload is False:
        return 0.0
    if offload is True:
        return 1.0
    value = float(offload)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"offload must be a bool or a fraction in [0, 1], got {offload!r}")
    return value


class Engine:
    def __init__(self, model_name="llama-3.1-8b", method: str = "dense", params: dict | None = None,
                 batch: int = 1, max_seq: int = 4096, n_layers: int | None = None, device=None,
                 dtype=None, offload=False, kv_dtype: str | None = None, seed: int = 0,
                 decoder: Decoder | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch_dtype(dtype or ("bf16" if self.device.type == "cuda" else "fp32"))
        self.model = decoder or Decoder(model_name, n_layers, self.device, self.dtype, seed, max_positions=max_seq)
        if self.model.max_positions < max_seq:
            raise ValueError(f"the decoder holds positions up to {self.model.max_positions}, below max_seq {max_seq}")
        self.cfg = self.model.cfg
        self.method_name, self.user_params = method, dict(params or {})
        self.batch, self.max_seq, self.seed = int(batch), int(max_seq), seed
        self.offload = offload_fraction(offload)
        if kv_dtype not in (None, "same", "int8", DTYPE_NAMES[self.dtype]):
            raise ValueError(f"kv_dtype must be {DTYPE_NAMES[self.dtype]} (as the model) or int8, got {kv_dtype!r}")
        self.kv_dtype = "int8" if kv_dtype == "int8" else "same"
        self.pcie = PcieCounter()
        self.params_record, self.params = resolve(method, params, self.cfg, self.max_seq)  # validates now
        self.method = None
        self._gen = torch.Generator(device=self.device).manual_seed(seed + 1)

    @property
    def spec(self) -> CacheSpec:
        m = self.model
        return CacheSpec(m.n_layers, self.batch, self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim,
                         self.max_seq, self.device, self.dtype, self.kv_dtype, self.offload)

    @torch.no_grad()
    def prefill_synthetic(self, seq: int, context: int | None = None) -> None:
        """Build the method's cache and fill ``seq`` tokens. Parameters that depend on the context
        (SparQ k = S/16, H2O 0.1·S) are resolved at ``context`` (default seq + 1: the first
        decode step's context, as kvsim's Workload.seq counts it)."""
        if not 1 <= seq < self.max_seq:
            raise ValueError(f"prefill length must be 1..{self.max_seq - 1} (max_seq − 1), got {seq}")
        self.params_record, self.params = resolve(self.method_name, self.user_params, self.cfg,
                                                  seq + 1 if context is None else context)
        self.method = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.method = self._new_method()
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 2)
        tokens = torch.randint(self.cfg.vocab, (self.batch, seq), generator=gen, device=self.device)
        self.method.begin_prefill(seq, tokens, self.model)
        self._prefill_layers(seq, gen)
        self.method.finish_prefill(seq)
        q = torch.randn(self.batch, self.cfg.n_heads, self.cfg.head_dim, generator=gen, device=self.device,
                        dtype=self.dtype)
        self._q = self._own_query_heads(q)

    def _new_method(self):
        return METHODS[self.method_name](self.spec, self.params, self.model.rotary, self.pcie)

    def _prefill_layers(self, seq: int, gen: torch.Generator) -> None:
        """Random pre-RoPE K and V for ``seq`` tokens in every layer, drawn at the full model's
        KV heads (so every rank of a tensor-parallel run draws the same ones)."""
        shape = (self.batch, self.cfg.n_kv_heads, seq, self.cfg.head_dim)
        for layer in range(self.model.n_layers):
            k = torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)
            v = torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)
            self._prefill_layer(layer, k, v)
            del k, v

    def _prefill_layer(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.method.prefill(layer, k, v)

    def _own_query_heads(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def _require_cache(self):
        if self.method is None:
            raise RuntimeError("call prefill_synthetic(seq) first")
        return self.method

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """One decode step for ``token_ids`` [B] (random when None) -> logits [B, vocab] fp32."""
        method = self._require_cache()
        if token_ids is None:
            token_ids = torch.randint(self.cfg.vocab, (self.batch,), generator=self._gen, device=self.device)
        return method.decode_step(self.model, token_ids.to(self.device))

    @torch.no_grad()
    def attention_only_step(self) -> torch.Tensor:
        """Attention over the cache in every layer with the method's selection and scoring work,
        for a fixed random query; no projections, MLP or cache write; the context stays."""
        return self._require_cache().attention_only(self._q)

    @property
    def length(self) -> int:
        """Tokens in the context before the next step."""
        return self._require_cache().n

    @property
    def pcie_bytes(self) -> dict[str, int]:
        return self.pcie.as_dict()

    @property
    def kv_bytes(self) -> int:
        """Device bytes of the method's cache and side structures."""
        return self._require_cache().device_bytes

    @property
    def host_kv_bytes(self) -> int:
        return self._require_cache().host_bytes

    @property
    def kv_dtype_name(self) -> str:
        spec = self.method.spec if self.method is not None else self.spec
        return "int8" if spec.kv_dtype == "int8" else DTYPE_NAMES[self.dtype]
