"""Parameter validation: every notebook checks its parameters before any work starts, and a bad one
gets an error that names it and the allowed values."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.paths import default_output_dir

PROFILES = ("demo", "full", "smoke")
DATA_SOURCES = ("synthetic", "real")


class ParameterError(ValueError):
    """A parameter is unknown or has a value outside what is allowed."""


@dataclass(frozen=True)
class Spec:
    """What a parameter may hold: a type, and optionally choices, bounds or None."""

    kind: type | tuple
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    optional: bool = False  # None allowed
    note: str = ""

    def allowed(self) -> str:
        if self.choices:
            return ", ".join(repr(c) for c in self.choices) + (f" {self.note}" if self.note else "")
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
                 dict: "a mapping"}
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        text = " or ".join(names.get(k, k.__name__) for k in kinds)
        if self.min is not None and self.max is not None:
            text += f" in [{self.min}, {self.max}]"
        elif self.min is not None:
            text += f" >= {self.min}"
        if self.optional:
            text += " or None"
        return text + (f" ({self.note})" if self.note else "")

    def check(self, name: str, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise ParameterError(f"parameter {name!r} is missing (None); allowed: {self.allowed()}")
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ParameterError(f"parameter {name!r} = {value!r} has the wrong type; allowed: {self.allowed()}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {name!r} = {value!r} is not allowed; allowed: {self.allowed()}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise ParameterError(f"parameter {name!r} = {value!r} is out of range; allowed: {self.allowed()}")
        return value


def weights_spec() -> Spec:
    return Spec(str, note="'standin', 'imagenet', 'none' or the path of a state-dict file")


COMMON = {
    "profile": Spec(str, PROFILES),
    "data_source": Spec(str, DATA_SOURCES),
    "data_dir": Spec(str, optional=True, note="default: the dataset's folder under data/"),
    "output_dir": Spec(str, optional=True, note="default: reports/<profile>/<notebook>/"),
    "image_size": Spec(int, min=16, max=1024),
    "batch_size": Spec(int, min=1),
    "lr": Spec(float, min=0.0),
    "epochs": Spec(int, min=0),
    "seed": Spec(int, min=0),
    "device": Spec(str, note="'auto', 'cpu', 'cuda', 'cuda:<i>' or 'mps'"),
}


def validate(params: dict, specs: dict[str, Spec], notebook: str) -> dict:
    """Check ``params`` against the common specs and ``specs``; fill ``output_dir``; return them resolved.

    Unknown names are errors too (a typo in a sweep would otherwise be silently ignored).
    """
    all_specs = {**COMMON, **specs}
    unknown = sorted(set(params) - set(all_specs))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(sorted(all_specs))}")
    resolved = {name: spec.check(name, params[name]) for name, spec in all_specs.items() if name in params}
    if "weights" in resolved:
        w = resolved["weights"]
        if w not in ("standin", "imagenet", "none") and not Path(w).expanduser().is_file():
            raise ParameterError(f"parameter 'weights' = {w!r} is not allowed; allowed: {weights_spec().allowed()}")
    if "profile" in resolved and not resolved.get("output_dir"):
        resolved["output_dir"] = str(default_output_dir(resolved["profile"], notebook))
    return resolved


def validate_runs(runs: list, specs: dict[str, Spec], name: str = "runs") -> list[dict]:
    """Validate a list of run dicts (each with a unique ``name``) against ``specs``."""
    if not isinstance(runs, list) or not runs:
        raise ParameterError(f"parameter {name!r} must be a non-empty list of runs (dicts with a 'name')")
    seen, out = set(), []
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("name"), str):
            raise ParameterError(f"{name}[{i}] = {run!r} must be a dict with a string 'name'")
        if run["name"] in seen:
            raise ParameterError(f"{name}[{i}]: the name {run['name']!r} is used twice; run names must be unique")
        seen.add(run["name"])
        unknown = sorted(set(run) - set(specs) - {"name"})
        if unknown:
            raise ParameterError(f"{name}[{i}] ({run['name']}): unknown key(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: name, {', '.join(sorted(specs))}")
        out.append({"name": run["name"], **{k: specs[k].check(f"{name}[{i}].{k}", v) for k, v in run.items()
                                            if k != "name"}})
    return out
