"""``make check-device`` (``python -m labkit check-device``): one command for a fresh GPU machine.

It runs, on the GPU: each question's training and evaluation at smoke size (the question modules called
directly, as their notebooks call them, with ``device="cuda"``: no notebook kernel); both CUDA paths of
``Batches`` (the uint8 set kept on the GPU, and pinned host memory with asynchronous copies, forced),
each checked against the CPU's batches; bf16 autocast against fp32 forward passes; then ``bench --gpu``
at a size that fits in about 5 minutes. One line per check; the exit code is 1 when any check failed.

It needs only torch, torchvision, numpy, pillow, scikit-learn, pandas, matplotlib, seaborn, pyyaml and
tqdm: nothing here imports papermill, jupyter or IPython. pytorch-metric-learning is imported only by
the Q2 checks that need it; without it the triplet run is skipped (carry its wheel, see the README) and
the other Q2 runs go without their retrieval metrics (computed on the CPU, not a GPU path).
Everything is written under a throwaway project root, never the user's ``data/``.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import torch

from labkit.bench import gpu as bench_gpu
from labkit.data import Batches
from labkit.data.synthetic import render_many
from labkit.device import autocast, choose_device
from labkit.questions import registry
from labkit.questions.experiments import Runner
# bf16 keeps 8 significant bits: each rounding is off by up to 2^-8 (0.4 %). Autocast rounds the inputs and
# weights of every convolution and linear layer (accumulating in fp32), and such errors add up roughly like
# a random walk over the layers: about 0.4 % x sqrt(53) = 3 % for ResNet-50's 53 at worst (0.6 % measured
# with bf16 on a CPU). A broken path (NaN, a wrong dtype, a layer skipped or run twice) is off by 50 % or more.
BF16_TOLERANCE = 0.05
# fp32 on the GPU against fp32 on the CPU: cuDNN may use TF32 (10 stored bits, 0.05 % per rounding), and the
# kernels sum in another order; both stay far below 1 %.
FP32_TOLERANCE = 0.01
# Batches on the GPU against the CPU's: the same integer crops and flips; the resize's float arithmetic may
# round differently, by far less than one grey level (1 / (0.225 * 255) = 0.017 after normalisation).
BATCH_TOLERANCE = 0.01
TRIPLET_SKIPPED = "skipped (pytorch-metric-learning not installed; carry its wheel)"


class CheckFailed(AssertionError):
    """A check ran and found the device path wrong; the message says what."""


@dataclass
class Result:
    name: str
    status: str  # "ok", "FAILED" or "skipped"
    detail: str
    seconds: float

    def line(self) -> str:
        return f"{self.status:7s} {self.name}: {self.detail} ({self.seconds:.1f} s)"


class Skip(Exception):
    """Raised by a check that cannot run here; its message is the summary line's detail."""


def has_metric_learning() -> bool:
    try:
        import pytorch_metric_learning  # noqa: F401 -- only whether it imports
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the questions

def check_question(key: str, device: torch.device, overrides: dict | None = None,
                   only: tuple[str, ...] | None = None) -> str:
    """Train and test a question's smoke-profile runs (``only`` those names, if given) on ``device``
    through its module: parameters -> plan -> load_data -> train_and_test, each distinct run once. Fails
    on a diverged run, a missing accuracy, or (on CUDA) nothing allocated on the GPU."""
    module = registry.question(key)
    P = registry.resolved_parameters(key, "smoke", device=str(device), **(overrides or {}))
    plan = {name: per_seed for part in module.plan(P).values() for name, per_seed in part.items()
            if only is None or name in only}
    dev = choose_device(P["device"])
    data = module.load_data(P)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    outcomes = Runner(module, data, dev)(plan)
    problems = [f"{o.name}: diverged ({o.history.message})" for runs in outcomes.values() for o in runs if o.diverged]
    problems += [f"{o.name}: no test accuracy" for runs in outcomes.values() for o in runs
                 if not o.diverged and o.accuracy is None]
    if problems:
        raise CheckFailed("; ".join(problems))
    accuracies = [o.accuracy for runs in outcomes.values() for o in runs]
    detail = (f"{len(accuracies)} run(s) trained and tested on {dev}, test accuracy "
              f"{min(accuracies):.0%}-{max(accuracies):.0%} (smoke size)")
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
        if not peak:
            raise CheckFailed("the runs allocated nothing on the GPU: they did not run there")
        detail += f", peak GPU memory {peak / 2**20:.0f} MiB"
    return detail


def check_q2_without_triplet(device: torch.device, overrides: dict | None = None) -> str:
    """Q2's cross-entropy and center-loss runs; without pytorch-metric-learning their retrieval metrics
    (a CPU computation on the embeddings) are left out, so the GPU path is still checked."""
    if has_metric_learning():
        return check_question("q2", device, overrides, only=("ce", "ce_center"))
    with mock.patch.object(registry.question("q2"), "retrieval", lambda embeddings, labels: {}):
        detail = check_question("q2", device, overrides, only=("ce", "ce_center"))
    return detail + "; retrieval metrics left out (pytorch-metric-learning not installed)"


def check_q2_triplet(device: torch.device, overrides: dict | None = None) -> str:
    if not has_metric_learning():
        raise Skip(TRIPLET_SKIPPED)
    return check_question("q2", device, overrides, only=("ce_triplet",))


# --------------------------------------------------------------------------- Batches and bf16

def check_batches(device: torch.device, pinned: bool = False) -> str:
    """Two epochs of augmented, resized, channels-last batches on ``device`` against the same batches made
    on the CPU. On CUDA the uint8 set is kept on the GPU, or (``pinned``) held in pinned host memory with
    each batch gathered there and copied asynchronously: forced by reporting no free GPU memory."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (72, 3, 40, 40), dtype=torch.uint8, generator=g)
    labels = torch.arange(72) % 4
    settings = dict(augment=True, image_size=48, seed=3, channels_last=True)
    force = mock.patch("torch.cuda.mem_get_info", return_value=(0, 0)) if pinned else contextlib.nullcontext()
    with force:
        batches = Batches(images, labels, 16, device=device, **settings)
    kept = batches._images  # which copy of the set Batches gathers from: the path under test
    path = ("pinned host memory" if kept.is_pinned() else "host memory") if kept.device.type == "cpu" else "GPU memory"
    expected = "host memory" if device.type == "cpu" else "pinned host memory" if pinned else "GPU memory"
    if path != expected:
        raise CheckFailed(f"the set is kept in {path}, expected {expected}")
    reference = Batches(images, labels, 16, device="cpu", **settings)
    worst, n = 0.0, 0
    for epoch in (0, 1):
        batches.epoch = reference.epoch = epoch
        for (x, y), (rx, ry) in zip(batches, reference, strict=True):
            if x.device.type != device.type or x.dtype != torch.float32 or tuple(x.shape) != (len(y), 3, 48, 48):
                raise CheckFailed(f"a batch came as {x.dtype} {tuple(x.shape)} on {x.device}")
            if not x.is_contiguous(memory_format=torch.channels_last):
                raise CheckFailed("a batch is not channels-last")
            if not torch.equal(y.cpu(), ry):
                raise CheckFailed("labels differ from the CPU's")
            worst = max(worst, (x.cpu() - rx).abs().max().item())
            n += 1
    if not worst <= BATCH_TOLERANCE:
        raise CheckFailed(f"batches differ from the CPU's by up to {worst:.3g} (allowed {BATCH_TOLERANCE})")
    return f"{n} batches from {path} match the CPU's within {BATCH_TOLERANCE} (largest difference {worst:.1e})"


def _bf16(device: torch.device):
    """labkit's bf16 autocast (what training uses when its precision resolves to bf16: always on CUDA), on any
    device, so the tests run this check's arithmetic on the CPU too."""
    return autocast(device, "bf16")


@torch.no_grad()
def check_bf16(device: torch.device, batch: int = 16) -> str:
    """A few forward passes of each model in fp32 on the CPU (the exact reference), in fp32 on ``device``
    and in bf16 autocast on ``device``; the logits' relative error must stay within the tolerances above."""
    protos = torch.arange(batch) % 10
    out = []
    for name, arch, classes, size in (("ResNet-50", "resnet50", 10, 64), ("ResNet-18", "resnet18", 10, 64),
                                      ("SmallCNN", "smallcnn", 2, 128)):
        torch.manual_seed(0)
        model = bench_gpu.make_model(arch, classes).eval()
        x = torch.from_numpy(render_many(protos.tolist(), size, seed=1)).permute(0, 3, 1, 2).float() / 255
        x = ((x - 0.45) / 0.225).contiguous(memory_format=torch.channels_last)
        exact = model.to(memory_format=torch.channels_last)(x)
        model, xd = model.to(device), x.to(device)
        fp32 = model(xd).float().cpu()
        with _bf16(device):
            low = model(xd)
        if low.dtype != torch.bfloat16:
            raise CheckFailed(f"{name}: autocast gave {low.dtype}, not bfloat16: the bf16 path is not taken")
        errors = [((v.float().cpu() - exact).norm() / exact.norm()).item() for v in (fp32, low)]
        if not errors[0] <= FP32_TOLERANCE or not errors[1] <= BF16_TOLERANCE:
            raise CheckFailed(f"{name}: relative error of the logits fp32 {errors[0]:.2%} (allowed "
                              f"{FP32_TOLERANCE:.0%}), bf16 {errors[1]:.2%} (allowed {BF16_TOLERANCE:.0%})")
        agree = (low.float().cpu().argmax(1) == exact.argmax(1)).float().mean().item()
        out.append(f"{name} {errors[1]:.2%} (top-1 agrees on {agree:.0%})")
    return (f"bf16 logits' relative error against fp32 (allowed {BF16_TOLERANCE:.0%}): " + ", ".join(out))


# --------------------------------------------------------------------------- running them

def checks(device: torch.device, overrides: dict[str, dict] | None = None,
           bench: dict | None = None) -> list[tuple[str, Callable[[], str]]]:
    """The checks in order, as (name, function returning the summary detail). ``overrides`` per question
    (the tests shrink the models); ``bench`` holds ``bench_gpu.run``'s size, or None to leave it out."""
    o = overrides or {}
    out = [("q1 training + evaluation (smoke)", lambda: check_question("q1", device, o.get("q1"))),
           ("q2 ce + ce_center (smoke)", lambda: check_q2_without_triplet(device, o.get("q2"))),
           ("q2 ce_triplet (smoke)", lambda: check_q2_triplet(device, o.get("q2"))),
           ("q3 training + evaluation (smoke)", lambda: check_question("q3", device, o.get("q3"))),
           ("Batches, set kept on the device", lambda: check_batches(device)),
           ("Batches, pinned host memory (forced)", lambda: check_batches(device, pinned=True)),
           ("bf16 autocast vs fp32", lambda: check_bf16(device))]
    if device.type == "cpu":  # pinned memory needs CUDA; the CPU has the one path, checked just above
        out = [c for c in out if "pinned" not in c[0]]
    if bench is not None:
        out.append(("bench --gpu (short)", lambda: _bench(device, bench)))
    return out


def _bench(device: torch.device, size: dict) -> str:
    results = bench_gpu.run(device, **size)
    r50 = results["training"][0]
    return (f"{r50['case']}: {r50['labkit_img_per_s']:,.0f} img/s (labkit), {r50['ratio']:.2f}x the plain loop; "
            f"figures above")


def run_checks(named: list[tuple[str, Callable[[], str]]]) -> int:
    """Run every check (a failure does not stop the others), printing one summary line as each ends and a
    count at the end; 1 if any failed."""
    counts = {"ok": 0, "skipped": 0, "FAILED": 0}
    for name, fn in named:
        t = time.perf_counter()
        try:
            status, detail = "ok", fn()
        except Skip as skip:
            status, detail = "skipped", str(skip)
        except Exception as err:  # noqa: BLE001 -- a failed check is reported and the others still run
            status, detail = "FAILED", f"{type(err).__name__}: {' '.join(str(err).split())}"
        counts[status] += 1
        print(Result(name, status, detail, time.perf_counter() - t).line(), flush=True)
    print(f"check-device: {counts['ok']} ok, {counts['skipped']} skipped, {counts['FAILED']} failed", flush=True)
    return 1 if counts["FAILED"] else 0


CHECK_BENCH = {"n_images": 768, "repeats": 3, "workers": 8, "steps": 10, "rate_repeats": 2}


def main() -> int:
    """On CUDA: every check under a throwaway project root. Without CUDA: one line, exit 0."""
    if not torch.cuda.is_available():
        print("check-device: " + bench_gpu.NO_CUDA.format(torch=torch.__version__, cuda=torch.version.cuda,
                                                          what="checked"))
        return 0
    device = choose_device("cuda")
    print(bench_gpu.device_line(device), flush=True)
    with bench_gpu.throwaway_root("labkit-check-device-"):
        return run_checks(checks(device, bench=CHECK_BENCH))
