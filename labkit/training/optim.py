"""The one optimizer rule of every question: a run's ``optimizer`` (sgd, adam, adamw), ``lr``, and ``momentum``,
``betas``, ``weight_decay``, each None for the optimizer's own default (SGD momentum 0, Adam betas (0.9, 0.999),
weight decay 0; AdamW's 0.01). A setting the chosen optimizer would silently ignore (momentum with Adam, betas
with SGD) is refused before anything runs. Fused kernels where the device has them."""
from __future__ import annotations

import torch

from labkit.params import ParameterError, Spec

OPTIMIZERS = ("sgd", "adam", "adamw")
# The run settings that make an optimizer, and which of the optional ones each optimizer takes.
SETTINGS = ("optimizer", "lr", "momentum", "betas", "weight_decay")
TAKES = {"sgd": ("momentum", "weight_decay"), "adam": ("betas", "weight_decay"), "adamw": ("betas", "weight_decay")}
CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}  # torch.optim's names
# Each optimizer's own defaults: a value equal to one is stored as None, so runs that differ only in spelling it
# out are one run (trained once) and keep one checkpoint key.
DEFAULTS = {"sgd": {"momentum": 0.0, "weight_decay": 0.0}, "adam": {"betas": [0.9, 0.999], "weight_decay": 0.0},
            "adamw": {"betas": [0.9, 0.999], "weight_decay": 0.01}}
# The same names as run settings and as notebook parameters, in every question.
SPECS = {
    "optimizer": Spec(str, OPTIMIZERS),
    "lr": Spec(float, min=0.0),
    "momentum": Spec(float, min=0.0, max=1.0, optional=True, note="SGD's; None: 0"),
    "betas": Spec((list, tuple), optional=True, note="Adam's [beta1, beta2], each in [0, 1); None: [0.9, 0.999]"),
    "weight_decay": Spec(float, min=0.0, optional=True, note="None: the optimizer's own (0; AdamW 0.01)"),
}


def check_settings(run: str, settings: dict) -> dict:
    """A run's optimizer settings, checked: one it would ignore is refused naming the run, the setting and the
    optimizer (wherever it was set: the run, the notebook's parameters or a profile file); ``betas`` become two
    floats in [0, 1); a value equal to the optimizer's own default becomes None (:data:`DEFAULTS`)."""
    name = settings.get("optimizer", "adam")
    for key in ("momentum", "betas", "weight_decay"):
        if settings.get(key) is not None and key not in TAKES[name]:
            takes = next(o for o, keys in TAKES.items() if key in keys)
            raise ParameterError(f"run {run!r}: {key}={settings[key]!r} does not apply to optimizer={name!r}, which "
                                 f"would ignore it; allowed: {key}: null with {name}, or optimizer: {takes}")
    if settings.get("betas") is not None:
        betas = settings["betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ParameterError(f"run {run!r}: betas={betas!r} is not allowed; allowed: [beta1, beta2], each in "
                                 f"[0, 1), or null for (0.9, 0.999)")
        settings = {**settings, "betas": [float(b) for b in betas]}
    return {k: None if k in DEFAULTS[name] and v == DEFAULTS[name][k] else v for k, v in settings.items()}


def make_optimizer(name: str, params, lr: float, momentum: float | None = None, betas=None,
                   weight_decay: float | None = None) -> torch.optim.Optimizer:
    """torch's optimizer ``name`` over the parameters that train; each optional setting that is None keeps the
    optimizer's own default. The fused implementations are used where the device supports them (CPU and CUDA):
    one kernel for all parameters instead of a Python loop, e.g. 5x faster Adam steps for ResNet-50 on the CPU."""
    if name not in CLASSES:
        raise ValueError(f"optimizer={name!r} is not allowed; allowed: {', '.join(OPTIMIZERS)}")
    given = {"momentum": momentum, "betas": tuple(betas) if betas is not None else None, "weight_decay": weight_decay}
    kwargs = {k: v for k, v in given.items() if v is not None}
    ignored = set(kwargs) - set(TAKES[name])
    if ignored:
        raise ValueError(f"optimizer={name!r} does not take {', '.join(sorted(ignored))}")
    params = [p for p in params if p.requires_grad]
    cls = getattr(torch.optim, CLASSES[name])
    try:
        return cls(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel (e.g. MPS)
        return cls(params, lr=lr, **kwargs)


def for_run(run, params) -> torch.optim.Optimizer:
    """The optimizer a run's settings ask for (see :func:`check_settings`)."""
    s = run.settings
    return make_optimizer(s["optimizer"], params, s["lr"], s.get("momentum"), s.get("betas"), s.get("weight_decay"))
