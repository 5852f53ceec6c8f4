"""Where a run computes and how it is seeded: device choice, seeds, the device's name, the precision
(bf16 autocast), and the C allocator's settings for training on the CPU."""
from __future__ import annotations

import os
import random
import sys

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


# glibc's mallopt parameters, and the values keep_freed_memory sets (see there).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_HEAP_BYTES, HEAP_ALLOC_MAX_BYTES = 256 << 20, 64 << 20
_allocator_set: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed activation buffers instead of handing them back to the system.

    A training step on the CPU frees and then allocates the same large buffers again (SmallCNN's first
    activation at 64 px and batch 64 is 17 MB; at 96 px, 38 MB). By default glibc returns such buffers
    to the kernel (mmap above an adaptive limit of at most 32 MB, heap trimming below it), so each step
    page-faults and zeroes them afresh: measured on the 2-core machine, 3,000-14,000 page faults and
    7-22 ms of system time per SmallCNN step at 64 px (74 ms of computation), and 78,000 faults and
    142 ms per step at 96 px, where it halves the step's speed. Taking buffers up to 64 MB from the heap
    and keeping up to 256 MB of freed heap removes those faults; no number changes (only where memory
    comes from), and the process may hold up to 256 MB it does not use.

    Process-wide, once, on Linux with glibc, unless ``MALLOC_*`` or ``GLIBC_TUNABLES`` in the
    environment already choose (another allocator preloaded, e.g. jemalloc, makes it moot). Returns
    whether the settings are in effect.
    """
    global _allocator_set
    if _allocator_set is None:
        _allocator_set = False
        chosen = any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ)
        if sys.platform.startswith("linux") and not chosen:
            import ctypes
            import platform
            if platform.libc_ver()[0] == "glibc":
                try:
                    libc = ctypes.CDLL("libc.so.6")
                    # Both or neither: setting one turns glibc's adaptive choice of the other off, which
                    # alone is worse than the default. Older glibc refuse more than 32 MB for the first.
                    _allocator_set = any(libc.mallopt(M_MMAP_THRESHOLD, n) for n in (HEAP_ALLOC_MAX_BYTES, 32 << 20)) \
                        and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_HEAP_BYTES))
                except (OSError, AttributeError):
                    pass
    return _allocator_set


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators (samplers and initialisers draw from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86's AVX512-BF16 or AMX-BF16, read from Linux's
    /proc/cpuinfo). Elsewhere bf16 on the CPU is emulated and slower than fp32, so "auto" keeps fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device, model: str, image_size: int, batch_size: int) -> str:
    """The arithmetic a run trains and tests in: "fp32", or "bf16" (autocast: convolutions and matrix
    products in bfloat16, weights, optimizer and losses' reductions in fp32).

    "auto": bf16 on CUDA (as before); on a CPU with native bf16 (:func:`native_bf16_cpu`), bf16 where
    ``make bench`` measured it faster on such a CPU (2 cores, AVX512-BF16 and AMX): the ResNets at 64 px
    and above (ResNet-18 at 64 px, batch 64: 1.55x with channels-last in ``bench --only cpu``; at 32 px it
    is 0.9x, so the demo stays fp32) and the small CNN at batch 4 and above (1.1-1.6x; batch 1: 0.94x); fp32 everywhere else.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type != "cpu" or not native_bf16_cpu():
        return "fp32"
    faster = image_size >= 64 if model.startswith("resnet") else batch_size >= 4
    return "bf16" if faster else "fp32"


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast for ``precision`` "bf16" (on any device), nothing for "fp32"."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: resolve it first (labkit.device.resolve_precision)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def device_name(device: torch.device) -> str:
    """What a run's cost was measured on: the GPU's name and memory, or the CPU's model and core count."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    import platform
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"
