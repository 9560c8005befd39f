"""What is being run: batch, context length, generated tokens, dtypes. Arrays broadcast."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import KvsimError

# bytes per element
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")
WEIGHT_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")


def _positive(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.size == 0 or not (array.min() > 0 and array.max() < np.inf):  # NaN fails the first
        raise KvsimError(f"{name} must be positive, got {value!r}")
    if (array != np.round(array)).any():
        raise KvsimError(f"{name} must be a whole number, got {value!r}")
    return array


@dataclass(frozen=True)
class Workload:
    """``seq`` is the context one decode step attends to (cache length including the new token);
    ``batch`` sequences decode together. Both may be numpy arrays that broadcast (a sweep grid)."""

    seq: np.ndarray
    batch: np.ndarray = field(default_factory=lambda: np.asarray(1.0))
    gen: int = 0
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    _made: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see ``once``

    def __post_init__(self):
        object.__setattr__(self, "seq", _positive("context length", self.seq))
        object.__setattr__(self, "batch", _positive("batch", self.batch))
        if self.gen < 0:
            raise KvsimError(f"generated tokens must not be negative, got {self.gen}")
        if self.dtype not in WEIGHT_DTYPES:
            raise KvsimError(f"unknown dtype '{self.dtype}'; choose one of: {', '.join(WEIGHT_DTYPES)}")
        if self.kv_dtype not in KV_DTYPES:
            raise KvsimError(f"unknown kv dtype '{self.kv_dtype}'; choose one of: {', '.join(KV_DTYPES)}")

    @property
    def b_w(self) -> float:
        """Bytes per weight element."""
        return DTYPE_BYTES[self.dtype]

    @property
    def b_a(self) -> float:
        """Bytes per activation element: 16-bit unless weights are fp32."""
        return 4.0 if self.dtype == "fp32" else 2.0

    @property
    def b_kv(self) -> float:
        return DTYPE_BYTES[self.kv_dtype]

    @property
    def kv_scale_bytes_per_row(self) -> float:
        """int8 KV: an fp16 scale and zero point per (token, head) row (ALISA §5, channel-wise
        asymmetric per row group); fp8 uses one per-tensor scale, which is negligible."""
        return 4.0 if self.kv_dtype == "int8" else 0.0

    @property
    def compute_dtype(self) -> str:
        return self.dtype

    def once(self, key: tuple, make):
        """``make()`` the first time ``key`` is asked of this workload: what depends on the
        workload and ``key`` alone, made once however many callers ask (the decoder's ops,
        the same for every method costed on one workload)."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def with_(self, **changes) -> "Workload":
        values = dict(seq=self.seq, batch=self.batch, gen=self.gen, dtype=self.dtype,
                      kv_dtype=self.kv_dtype)
        values.update(changes)
        return Workload(**values)
