"""``bench --only cpu``: CPU training near the machine's limit. The cpu profile's Q2 training step (ResNet-18 at
Tiny ImageNet's 64 px, its batch size, 50 classes: forward, cross-entropy, backward, Adam step) in today's CPU
path (fp32, contiguous tensors: what labkit did before the precision setting) against each candidate, measured in
the same run (interleaved repeats, medians), printed as ratios; and the step's achieved GFLOP/s (FLOPs counted by
``torch.utils.flop_counter``) beside a matrix multiply's measured peak in the same precision on this machine;
and the stand-ins' pre-training step with labkit's window convolutions against torch's plain ones. A benchmark,
not a test."""
from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from labkit.bench.fixtures import interleaved
from labkit.device import autocast, native_bf16_cpu, resolve_precision
from labkit.models import classifier, resnet
from labkit.training.convs import plain_convs

# name: (precision, channels-last, torch.compile)
CANDIDATES = {
    "today: fp32, contiguous": ("fp32", False, False),
    "fp32, channels-last": ("fp32", True, False),
    "bf16 autocast, contiguous": ("bf16", False, False),
    "bf16 autocast, channels-last": ("bf16", True, False),
    "bf16 autocast, channels-last, torch.compile": ("bf16", True, True),
}
TODAY = "today: fp32, contiguous"
# Where precision "auto" draws its line on a CPU with native bf16: (label, model, image size, batch size, today's
# layout). The demo's ResNet-18 at 32 px; Q3's small CNN at batch 64 and at batch 1 (it was channels-last already).
RULE_CHECKS = [("demo ResNet-18, 32 px, batch 32", "resnet18", 32, 32, False),
               ("Q3 small CNN, 64 px, batch 64", "smallcnn", 64, 64, True),
               ("Q3 small CNN, 64 px, batch 1 (SGD)", "smallcnn", 64, 1, True)]


def q2_setting() -> dict:
    """The cpu profile's Q2 step: its image size, batch size and class count (notebooks/params/cpu/q2.yaml)."""
    from labkit.questions import registry
    P = registry.resolved_parameters("q2", "cpu")
    return {"image_size": P["image_size"], "batch_size": P["batch_size"], "num_classes": P["num_classes"]}


def training_step(precision: str, channels_last: bool, compiled: bool, image_size: int, batch_size: int,
                  num_classes: int, arch: str = "resnet18"):
    """One training step of ``arch`` (a ResNet with a new head, or "smallcnn") as labkit's loop takes it
    (autocast around forward and loss, Adam), on one fixed batch: a function that runs it once (``.model``:
    the network it trains)."""
    from labkit.models import SmallCNN
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = SmallCNN(num_classes=num_classes) if arch == "smallcnn" else classifier(resnet(arch, "none"), num_classes)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.arange(batch_size) % num_classes
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    model.train()

    def step():
        with autocast(cpu, precision):
            out = forward(x)
            loss = F.cross_entropy(out.logits if hasattr(out, "logits") else out, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step.model = model  # for the tests: what the step trains
    return step


def rule_checks(repeats: int, quiet: bool) -> dict:
    """Each rule check's step: today's path against bf16 autocast with channels-last, and what "auto" picks."""
    out = {}
    for label, model_name, size, batch, today_layout in RULE_CHECKS:
        steps = {layout: training_step(precision, channels_last, False, size, batch, 2, model_name)
                 for layout, precision, channels_last in (("today", "fp32", today_layout), ("bf16", "bf16", True))}
        inner = max(1, 256 // batch)  # a batch-1 step is too short to time alone

        def repeated(step):
            def run():
                for _ in range(inner):
                    step()
            return run
        for step in steps.values():
            step()
        seconds = interleaved({k: repeated(v) for k, v in steps.items()}, repeats)
        auto = resolve_precision("auto", torch.device("cpu"), model_name, size, batch)
        ratio = seconds["today"] / seconds["bf16"]
        out[label] = {"bf16_speedup": round(ratio, 3), "auto": auto}
        log(f"  {label}: bf16 autocast + channels-last {ratio:.2f}x today's -> auto picks {auto}", quiet)
    return out


# The stand-ins' pre-training steps (labkit.training.standin.SETTINGS: image size, batch size; fp32, channels-last,
# Adam), where layer4's maps are 1x1 (and layer3's too at 16 px): window convolutions against plain ones.
WINDOW_CHECKS = [("demo stand-in, ResNet-18, 32 px, batch 128", "standin"),
                 ("smoke stand-in, ResNet-18, 16 px, batch 32", "standin-smoke")]


def window_conv_checks(repeats: int, quiet: bool) -> dict:
    """Each stand-in's pre-training step with labkit's :class:`WindowConv2d` against torch's plain ``nn.Conv2d``
    (the same network and batch otherwise), measured in the same run: the speed-up."""
    from labkit.training.standin import SETTINGS, source_classes
    out = {}
    for label, kind in WINDOW_CHECKS:
        size, batch = SETTINGS[kind]["image_size"], SETTINGS[kind]["batch_size"]
        steps = {convs: training_step("fp32", True, False, size, batch, len(source_classes()))
                 for convs in ("plain", "window")}
        plain_convs(steps["plain"].model)
        for step in steps.values():
            step()  # warm-up
        seconds = interleaved(steps, repeats)
        ratio = seconds["plain"] / seconds["window"]
        out[label] = {"window_conv_speedup": round(ratio, 3), "plain_s": round(seconds["plain"], 4),
                      "window_s": round(seconds["window"], 4)}
        log(f"  {label}: {1e3 * seconds['plain']:.0f} ms per step with nn.Conv2d, {1e3 * seconds['window']:.0f} ms "
            f"with window convolutions -> {ratio:.2f}x", quiet)
    return out


def step_flops(image_size: int, batch_size: int, num_classes: int) -> int:
    """FLOPs of one step's forward and backward pass (convolutions and matrix products, as the counter counts
    them; the optimizer's elementwise update is not among them)."""
    from torch.utils.flop_counter import FlopCounterMode
    step = training_step("fp32", False, False, image_size, batch_size, num_classes)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_peak(precision: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product in ``precision`` on this machine (median of ``repeats``): the
    practical peak a training step could reach."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: the kernel's first call
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def log(line: str, quiet: bool) -> None:
    print(line, file=sys.stderr if quiet else sys.stdout, flush=True)


def main(repeats: int = 5, as_json: bool = False) -> dict:
    """Every candidate against today's path; the speed-up of what ``precision: auto`` picks on this machine and
    its achieved fraction of the matrix-multiply peak. With ``as_json`` the lines go to stderr."""
    s = q2_setting()
    auto = resolve_precision("auto", torch.device("cpu"), "resnet18", s["image_size"], s["batch_size"])
    chosen = "bf16 autocast, channels-last" if auto == "bf16" else TODAY
    log(f"CPU training step (the cpu profile's Q2: ResNet-18, {s['image_size']} px, batch {s['batch_size']}, "
        f"{torch.get_num_threads()} threads; native bf16: {'yes' if native_bf16_cpu() else 'no'}), "
        f"{repeats} interleaved repeats, medians:", as_json)
    steps, compile_seconds = {}, None
    for name, (precision, channels_last, compiled) in CANDIDATES.items():
        step = training_step(precision, channels_last, compiled, **s)
        t = time.perf_counter()
        try:
            step()  # warm-up; torch.compile compiles here
        except Exception as err:  # noqa: BLE001 -- a compiler missing on this machine is a finding, not a crash
            log(f"  {name}: not measured ({type(err).__name__}: {str(err).splitlines()[0][:120]})", as_json)
            continue
        if compiled:
            compile_seconds = time.perf_counter() - t
        steps[name] = step
    seconds = interleaved(steps, repeats)
    for name, sec in seconds.items():
        extra = f"; compiling took {compile_seconds:.0f} s once" if CANDIDATES[name][2] and compile_seconds else ""
        mark = "  <- precision: auto on this machine" if name == chosen else ""
        log(f"  {name}: {s['batch_size'] / sec:,.0f} img/s, {seconds[TODAY] / sec:.2f}x today's{extra}{mark}",
            as_json)
    flops = step_flops(**s)
    peak = matmul_peak(auto)
    achieved = flops / seconds[chosen] / 1e9
    log(f"  achieved: {flops / 1e9:.1f} GFLOP per step (forward and backward) in {seconds[chosen] * 1e3:.0f} ms -> "
        f"{achieved:,.0f} GFLOP/s; a {auto} 2048 x 2048 matrix multiply on this machine: {peak:,.0f} GFLOP/s -> "
        f"{100 * achieved / peak:.0f} % of that peak", as_json)
    log("where precision: auto draws its line (same kind of step, same run):", as_json)
    checks = rule_checks(repeats, as_json)
    log("the stand-ins' pre-training step, where ResNet maps are 1x1 (same run):", as_json)
    windows = window_conv_checks(repeats, as_json)
    if auto == "bf16":
        fp32_peak = matmul_peak("fp32")
        log(f"  for comparison, today's fp32 step: {flops / seconds[TODAY] / 1e9:,.0f} GFLOP/s of an fp32 peak of "
            f"{fp32_peak:,.0f} GFLOP/s ({100 * flops / seconds[TODAY] / 1e9 / fp32_peak:.0f} %)", as_json)
    return {"cpu_train_speedup": round(seconds[TODAY] / seconds[chosen], 3),
            "achieved_fraction_of_peak": round(achieved / peak, 3),
            "img_per_s": {name: round(s["batch_size"] / sec, 1) for name, sec in seconds.items()},
            "chosen": chosen, "gflop_per_step": round(flops / 1e9, 2), "peak_gflop_per_s": round(peak, 1),
            "rule_checks": checks, "window_checks": windows}
