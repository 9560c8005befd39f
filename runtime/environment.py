"""What a record says of where it was measured: the device's name and the software versions."""
from __future__ import annotations

import platform

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def versions() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version}


def device_tag(name: str) -> str:
    """The short name the GPU scripts file their results under (benchmarks/gpu_*.sh): h100, h200, gpu."""
    return "h200" if "H200" in name else "h100" if "H100" in name else "gpu"


if __name__ == "__main__":  # python3 -m kvsim.runtime.environment: this GPU's tag
    print(device_tag(torch.cuda.get_device_name()))
