"""Environment every tensor-parallel process sets before torch (and NCCL) start: NVLink multicast
(NVLS) stays off, in NCCL, torch's symmetric memory and NVSHMEM. No torch import here, so a
script can set it before importing torch; spawned children inherit it and set it again."""
from __future__ import annotations

import os

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def disable_multicast() -> None:
    os.environ.update(NO_MULTICAST)
