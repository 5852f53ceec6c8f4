import os
import platform
import random
import sys

import numpy as np
import pytest
import torch

from labkit import device
from labkit.device import autocast, choose_device, seed_everything


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda, mps"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            choose_device("cuda")


def test_seed_everything_seeds_python_numpy_and_torch():
    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]
    seed_everything(8)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) != draws[0]


def test_autocast_is_off_on_the_cpu():
    with autocast(torch.device("cpu")):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


def _minor_faults() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
def test_training_steps_reuse_freed_memory_without_page_faults(monkeypatch):
    """At 96 px and batch 64 SmallCNN's activations are 38 MB: by default glibc maps each afresh every step
    (about 80,000 page faults a step); with keep_freed_memory (fit calls it on the CPU) they are reused."""
    import torch.nn.functional as F
    from labkit.models import SmallCNN
    for name in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(device, "_allocator_set", None)  # as in a fresh process (the setting itself stays)
    assert device.keep_freed_memory() and device.keep_freed_memory()  # once, and then it says so again
    x, y = torch.randn(64, 3, 96, 96), torch.randint(0, 2, (64,))
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), 0.01)

    def step():
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    step()
    step()
    before = _minor_faults()
    for _ in range(4):
        step()
    # Mapped afresh, each 38 MB buffer is 9,200 pages: 75,000-105,000 faults a step measured by default; reused,
    # 0 in most steps (now and then one buffer lands on new heap).
    assert (_minor_faults() - before) / 4 < 20_000


def test_an_allocator_chosen_in_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setattr(device, "_allocator_set", None)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert device.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setattr(device, "_allocator_set", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert device.keep_freed_memory() is False
