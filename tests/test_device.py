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


def test_autocast_computes_in_the_precision_asked():
    cpu = torch.device("cpu")
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with autocast(cpu, precision):
            out = torch.ones(2, 2) @ torch.ones(2, 2)
        assert out.dtype == dtype
    with pytest.raises(ValueError, match="resolve it first"):
        autocast(cpu, "auto")


@pytest.mark.parametrize("native, model, size, batch, expected", [
    (True, "resnet18", 64, 64, "bf16"),  # measured faster: 1.45x with channels-last
    (True, "resnet50", 96, 32, "bf16"),
    (True, "resnet18", 32, 64, "fp32"),  # the demo's 32 px: bf16 was slower (0.9x)
    (True, "smallcnn", 64, 4, "bf16"),
    (True, "smallcnn", 64, 1, "fp32"),  # batch-1 SGD: bf16 was slower (0.94x)
    (False, "resnet18", 224, 64, "fp32"),  # no native bf16: emulated, slower
])
def test_auto_precision_on_the_cpu_follows_the_measurements(monkeypatch, native, model, size, batch, expected):
    monkeypatch.setattr(device, "native_bf16_cpu", lambda: native)
    assert device.resolve_precision("auto", torch.device("cpu"), model, size, batch) == expected


def test_an_explicit_precision_is_kept_and_a_wrong_one_refused(monkeypatch):
    monkeypatch.setattr(device, "native_bf16_cpu", lambda: True)
    cpu = torch.device("cpu")
    assert device.resolve_precision("fp32", cpu, "resnet18", 224, 64) == "fp32"
    assert device.resolve_precision("bf16", cpu, "smallcnn", 16, 1) == "bf16"
    assert device.resolve_precision("auto", torch.device("cuda"), "smallcnn", 16, 1) == "bf16"  # as before
    assert device.resolve_precision("auto", torch.device("mps"), "resnet18", 224, 64) == "fp32"
    with pytest.raises(ValueError, match="allowed: auto, fp32, bf16"):
        device.resolve_precision("fp16", cpu, "resnet18", 224, 64)


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    import builtins
    real_open = builtins.open
    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx512f", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(info if path == "/proc/cpuinfo"
                                                                                 else path, *a, **k))
        assert device.native_bf16_cpu() is expected


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
