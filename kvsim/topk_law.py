"""torch.topk's measured cost in a hardware profile (``topk:``): the multi-block radix select's
call and read rate, and the single-block select's law over rows and lengths
(benchmarks/bench_topk.py)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .sourced import Sourced, _Frozen


class SingleBlockTopK(_Frozen):
    """torch.topk's single-block radix select, one thread block per row, measured: a call takes
    call_s + row_s · (size / 1024)^size_exponent · ⌈rows / concurrent_rows⌉^rows_exponent
    · min(rows, concurrent_rows)^wave_rows_exponent (the rows of one wave share L2 and HBM: one
    row alone runs 5-20% faster than eight)."""
    call_s: Sourced
    row_s: Sourced  # one row of 1024 candidates alone
    size_exponent: Sourced
    rows_exponent: Sourced
    concurrent_rows: Sourced  # rows in flight at once (one per SM)
    wave_rows_exponent: Optional[Sourced] = None  # absent: rows within a wave cost nothing

    def call_time(self, rows, size):
        per_row = (np.maximum(np.asarray(size, dtype=float), 1.0) / 1024.0) ** self.size_exponent.value
        rows = np.maximum(np.asarray(rows, dtype=float), 1.0)
        waves = np.ceil(rows / self.concurrent_rows.value)
        in_wave = np.minimum(rows, self.concurrent_rows.value)
        crowd = in_wave ** self.wave_rows_exponent.value if self.wave_rows_exponent else 1.0
        return self.call_s.value + self.row_s.value * per_row * waves ** self.rows_exponent.value * crowd


class LibraryCall(_Frozen):
    """Measured time of one call of a multi-kernel library routine: call_s + bytes / throughput
    (torch.topk's multi-block radix select), and where measured the single-block select's law."""
    call_s: Sourced
    throughput_Bps: Sourced
    single_block: Optional[SingleBlockTopK] = None
