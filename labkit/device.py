"""Where a run computes and how it is seeded: device choice, seeds, the device's name, bf16 autocast."""
from __future__ import annotations

import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def choose_device(device: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; an explicit choice that is not available is an error."""
    if not isinstance(device, str) or (device not in DEVICES and not device.startswith("cuda:")):
        raise ValueError(f"device={device!r} is not allowed; allowed: {', '.join(DEVICES)} or cuda:<index>")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else (
            "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device='auto' or 'cpu'")
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' but MPS is not available; use device='auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators (samplers and initialisers draw from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA only: on the CPU it would slow the small models down and change numbers."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def device_name(device: torch.device) -> str:
    """What a run's cost was measured on: the GPU's name and memory, or the CPU's model and core count."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    import os
    import platform
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"
