"""Checkpoint files: what a training run writes after each epoch, and what it keeps when it completes.

While a run trains, its checkpoint holds everything that resuming needs to end bit-identical to an
uninterrupted run: the model, the optimizers, the loss terms' state, the history, every generator's
state and the CPU thread count. Only the latest completed epoch is kept (atomically replaced).

When the run completes, the file is rewritten as the run's *final state*, which is all that re-running
or re-rendering a notebook needs: the model's trainable parameters and the buffers that changed, the loss
terms' modules, the history and the gradient-flow rows; no optimizer and no generator state (Adam's two
moments alone are twice the trainable weights). Entries still identical to the weights the model started
from (a frozen backbone: the stand-in's or ImageNet's) are stored as a hash only: loading checks the
hash against the freshly built model, which holds those weights again, so a changed weights file is
noticed instead of silently combined with a stale head.

``keep_checkpoints`` says what stays: "final" (the default), "none" (deleted when the run completes: a
re-run retrains) or "all" (every epoch's full checkpoint as well, ``<name>.epoch<N>.pt``).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from labkit.paths import DiskSpaceError, atomic_write_bytes, ensure_free_space, torch_bytes, touch


class StaleCheckpoint(Exception):
    """A final checkpoint refers to starting weights that the freshly built model does not hold."""


# --------------------------------------------------------------------------- the weights a run started from

def tensor_hash(t: torch.Tensor) -> str:
    """A hash of a tensor's dtype, shape and values (not its memory layout: channels-last hashes alike)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{tuple(t.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:32]


def source_hashes(model: torch.nn.Module) -> dict[str, str]:
    """Hashes of the state entries that training may leave as they were (frozen parameters and buffers),
    taken before training: at the end, those still equal are stored by reference."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: tensor_hash(v) for name, v in model.state_dict().items() if name not in trainable}


# --------------------------------------------------------------------------- generators

def rng_state() -> dict:
    """Every generator a run draws from: torch's (initialisation, dropout), numpy's global one (samplers such
    as pytorch-metric-learning's MPerClassSampler) and Python's. Stored as tensors and plain numbers, so the
    checkpoint still loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss": gauss_py}}


def set_rng_state(state) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))


# --------------------------------------------------------------------------- writing

def write(path: Path, blob: dict) -> None:
    """Serialise, check the disk has room (one clear error before anything is written), write atomically."""
    data = torch_bytes(blob)
    try:
        ensure_free_space(path.parent, len(data), f"the checkpoint {path}")
    except DiskSpaceError as err:
        raise DiskSpaceError(f"{err} `python -m labkit cache --prune` removes the checkpoints of runs not used "
                             f"for a week.") from None
    atomic_write_bytes(path, data)


def _terms_state(loss_terms, optimizers: bool) -> dict:
    return {t.name: {"module": t.module.state_dict() if t.module is not None else {},
                     "optimizer": t.optimizer.state_dict() if optimizers and t.optimizer is not None else {}}
            for t in loss_terms}


def save_training(path: Path, epoch: int, model, optimizer, loss_terms, history: dict, gradient_flow,
                  threads: int | None) -> None:
    """Everything resuming after ``epoch`` completed epochs needs, replacing the previous epoch's file."""
    write(path, {"epoch": epoch, "final": False, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "terms": _terms_state(loss_terms, True), "history": history, "rng": rng_state(),
                 "gradient_flow": gradient_flow.rows if gradient_flow is not None else [], "threads": threads})


def save_final(path: Path, epoch: int, model, loss_terms, history: dict, gradient_flow,
               source: dict[str, str]) -> None:
    """The completed run: trainable parameters and changed buffers, with hashes for the entries still equal to
    the starting weights (``source``, from :func:`source_hashes`); no optimizer or generator state."""
    state, reference = {}, {}
    for name, value in model.state_dict().items():
        if name in source and tensor_hash(value) == source[name]:
            reference[name] = source[name]
        else:
            state[name] = value
    write(path, {"epoch": epoch, "final": True, "model": state, "source": reference,
                 "terms": _terms_state(loss_terms, False), "history": history,
                 "gradient_flow": gradient_flow.rows if gradient_flow is not None else [],
                 "threads": history.get("threads")})


def keep_epoch(path: Path, epoch: int) -> None:
    """``keep_checkpoints="all"``: the epoch's file stays as ``<name>.epoch<N>.pt`` (a hard link: no second
    write; the next epoch's atomic replace gives the main name a new file and leaves this one as it is)."""
    copy = epoch_path(path, epoch)
    copy.unlink(missing_ok=True)
    try:
        os.link(path, copy)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(path, copy)


def epoch_path(path: Path, epoch: int) -> Path:
    return path.with_name(f"{path.stem}.epoch{epoch}{path.suffix}")


# --------------------------------------------------------------------------- reading

def load(path: Path, model, optimizer, loss_terms, gradient_flow, source: dict[str, str]) -> dict:
    """Load a checkpoint into ``model`` (and, for a run still training, the optimizers and generators).
    Returns ``{"epoch", "final", "history" (a dict), "threads"}``. Raises :class:`StaleCheckpoint` when a final
    checkpoint's referenced starting weights are not the ones ``model`` holds (``source``)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    touch(path)  # the last use, for `python -m labkit cache` and its --prune
    final = bool(blob["final"])  # every checkpoint this code can find was written by it (the key holds the code)
    if final:
        reference = blob.get("source", {})
        changed = sorted(name for name, h in reference.items() if source.get(name) != h)
        if changed:
            raise StaleCheckpoint(f"{path.name}: {len(changed)} stored-by-reference weight(s) differ from the "
                                  f"model's starting weights (e.g. {changed[0]})")
        if set(blob["model"]) | set(reference) != set(model.state_dict()):
            raise StaleCheckpoint(f"{path.name}: its entries do not match the model's")
        model.load_state_dict(blob["model"], strict=False)  # the referenced entries: the model holds them already
    else:
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        set_rng_state(blob["rng"])
    if gradient_flow is not None:
        gradient_flow.rows = list(blob.get("gradient_flow", []))
    for t in loss_terms:
        state = blob["terms"].get(t.name, {})
        if t.module is not None and state.get("module"):
            t.module.load_state_dict(state["module"])
        if t.optimizer is not None and state.get("optimizer"):
            t.optimizer.load_state_dict(state["optimizer"])
    return {"epoch": int(blob["epoch"]), "final": final, "history": blob["history"],
            "threads": blob.get("threads")}
