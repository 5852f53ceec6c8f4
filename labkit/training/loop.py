"""The training and evaluation core shared by every notebook: plain functions, no framework.

``fit`` trains for a number of epochs over a :class:`labkit.data.Batches`,
records per-epoch and per-update history, evaluates a validation split after
each epoch, checkpoints atomically after each epoch (at the path that
``labkit.runs.checkpoint_path`` derives from the run; the files are :mod:`labkit.training.checkpoints`' business),
resumes from the last checkpoint, keeps the final state when the run completes, and stops a run whose loss
turns NaN or inf (status "diverged"). The test set is not its business: each question's ``train_and_test``
predicts it once, at the end, with :func:`predict`.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.training import checkpoints as ckpt
from labkit.device import autocast, keep_freed_memory
from labkit.training.gradflow import GradientFlow
from labkit.training.losses import LossTerm, ModelOutput, as_output, cross_entropy_term
from labkit.params import KEEP_CHECKPOINTS
from labkit.training.sharing import cpu_threads, run_lock

# --------------------------------------------------------------------------- history

@dataclass
class History:
    """What ``fit`` recorded: one dict per epoch and one per update, and the run's status."""

    epochs: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    status: str = "ok"  # "ok" or "diverged"
    message: str = ""
    resumed_from_epoch: int = 0
    seconds: float = 0.0  # training time, all epochs (a resumed run adds to it)
    images: int = 0  # training images processed, all epochs: images / seconds is the run's throughput
    threads: int | None = None  # torch's CPU thread count for the whole run (None on CUDA): it changes CPU results

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)

    def cost(self) -> dict:
        """What the run cost: ``train_seconds``, ``train_images_per_second``, ``epochs``, ``updates``, and the
        ``torch_threads`` it trained with (its fair share on a shared CPU; None on CUDA): CPU results depend on it."""
        return {"train_seconds": self.seconds,
                "train_images_per_second": self.images / self.seconds if self.seconds > 0 else None,
                "epochs": len(self.epochs), "updates": self.updates[-1]["update"] if self.updates else 0,
                "torch_threads": self.threads}


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device | None = None,
            precision: str = "fp32") -> dict:
    """Logits, labels, predictions, the predicted class's probability and (when the model gives them)
    embeddings for every batch, on the CPU, in ``precision`` ("fp32" or "bf16" autocast; a run tests in the
    precision it trained in)."""
    device = device or next(model.parameters()).device
    model.eval()
    logits, labels, embeddings = [], [], []
    with autocast(device, precision):
        for x, y in batches:
            out = as_output(model(x))
            logits.append(out.logits.float().cpu())
            labels.append(y.cpu())
            if out.embedding is not None:
                embeddings.append(out.embedding.float().cpu())
    logits_t = torch.cat(logits) if logits else torch.zeros(0)
    return {"logits": logits_t, "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
            "predictions": logits_t.argmax(1) if len(logits_t) else torch.zeros(0, dtype=torch.long),
            # the softmax probability of the predicted class, kept with the predictions for comparisons
            "confidence": logits_t.softmax(1).amax(1) if len(logits_t) else torch.zeros(0),
            "embeddings": torch.cat(embeddings) if embeddings else None}


def evaluate(model: nn.Module, batches: Iterable, device: torch.device | None = None,
             precision: str = "fp32") -> dict:
    """Mean cross-entropy and accuracy over ``batches``."""
    p = predict(model, batches, device, precision)
    if not len(p["labels"]):
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": F.cross_entropy(p["logits"], p["labels"]).item(),
            "accuracy": (p["predictions"] == p["labels"]).float().mean().item()}


# --------------------------------------------------------------------------- training

class Diverged(Exception):
    pass


def _group_weights(sizes: list[int], k: int) -> list[float]:
    """Each batch's share of its optimizer step (``k`` batches per step), so an accumulated step equals
    the mean over its samples."""
    weights = []
    for start in range(0, len(sizes), k):
        group = sizes[start:start + k]
        weights += [s / sum(group) for s in group]
    return weights


def train_one_epoch(model: nn.Module, batches, optimizer: torch.optim.Optimizer, loss_terms: list[LossTerm],
                    *, epoch: int, history: History, device: torch.device, accumulate=1,
                    gradient_flow: GradientFlow | None = None, on_update=None, progress=None,
                    precision: str = "fp32") -> dict:
    """One pass over ``batches``; returns the epoch's mean training loss and accuracy.

    ``accumulate`` > 1 sums gradients over that many batches per optimizer step;
    "epoch" makes one step per epoch (full-batch gradient descent, in batches
    that fit in memory).
    """
    model.train()
    batches.epoch = epoch
    sizes = batches.batch_sizes()
    step_every = len(sizes) if accumulate == "epoch" else int(accumulate)
    share = _group_weights(sizes, step_every)
    update = history.updates[-1]["update"] if history.updates else 0
    first_new = len(history.updates)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    pending = []
    optimizers = [optimizer] + [t.optimizer for t in loss_terms if t.optimizer]
    hooks = [t.after_update for t in loss_terms if t.after_update]
    step_outputs = []
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(batches):
        with autocast(device, precision):
            out = as_output(model(x))
            loss = sum(t.weight * t.fn(out, y) for t in loss_terms if t.weight)
        (loss * share[i]).backward()
        detached = loss.detach()
        hits = out.logits.detach().argmax(1) == y
        total_loss += detached * len(y)
        correct += hits.sum()
        seen += len(y)
        pending.append((detached, hits.float().mean()))
        if hooks:
            step_outputs.append((ModelOutput(out.logits.detach(), None if out.embedding is None
                                             else out.embedding.detach()), y))
        if (i + 1) % step_every == 0 or i + 1 == len(share):
            update += 1
            if gradient_flow is not None:
                gradient_flow.record(update)
            for opt in optimizers:
                opt.step()
            if hooks:  # e.g. the center update: it sees every batch of the step, not only the last one
                step_out = ModelOutput(torch.cat([o.logits for o, _ in step_outputs]),
                                       None if out.embedding is None else torch.cat([o.embedding
                                                                                     for o, _ in step_outputs]))
                step_y = torch.cat([t for _, t in step_outputs])
                for hook in hooks:
                    hook(step_out, step_y)
                step_outputs = []
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            losses = torch.stack([l for l, _ in pending])
            accs = torch.stack([a for _, a in pending])
            history.updates.append({"update": update, "epoch": epoch + 1,
                                    "loss": losses, "accuracy": accs})  # tensors; made floats below
            pending = []
            if on_update is not None:
                on_update(update, model)
        if progress is not None:
            progress.update(1)
        if i % 64 == 63 and not torch.isfinite(total_loss):  # one sync every 64 batches
            break
    # one device sync per epoch: turn the recorded tensors into floats
    new = history.updates[first_new:]
    if new:
        losses = torch.stack([r["loss"].float().mean() for r in new]).tolist()
        accs = torch.stack([r["accuracy"].float().mean() for r in new]).tolist()
        for rec, loss_value, acc_value in zip(new, losses, accs):
            rec["loss"], rec["accuracy"] = loss_value, acc_value
    mean_loss = (total_loss / max(seen, 1)).item()
    if not math.isfinite(mean_loss):
        raise Diverged(f"training loss became {mean_loss} in epoch {epoch + 1}")
    return {"train_loss": mean_loss, "train_accuracy": (correct / max(seen, 1)).item(), "images": seen}


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    if os.environ.get("LABKIT_PLAIN_PROGRESS"):
        # Under the report runner (papermill) a bar would be saved into the executed notebook (as
        # widget state or stderr text) and end up in the report; the runner logs progress per cell.
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False)


def fit(model: nn.Module, train, *, epochs: int, optimizer: torch.optim.Optimizer,
        loss_terms: list[LossTerm] | None = None, val=None, accumulate=1, checkpoint: Path | None = None,
        keep_checkpoints: str = "final", gradient_flow: GradientFlow | None = None, on_update=None,
        device: torch.device | None = None, progress: bool = True, desc: str = "train",
        channels_last: bool | None = None, precision: str = "fp32") -> History:
    """Train ``model`` for ``epochs`` epochs over ``train`` (a :class:`labkit.data.Batches`).

    After each epoch: the validation split (if any) is evaluated, and the model,
    optimizer, loss-term state, history and RNG state are written atomically to
    ``checkpoint``. Calling ``fit`` again with the same checkpoint path resumes
    after the last completed epoch, and ends with the same weights as an
    uninterrupted run. A NaN or inf loss stops the run with status "diverged".
    When the run completes, ``keep_checkpoints`` says what stays (:mod:`labkit.training.checkpoints`): "final" (the
    final weights and history, without optimizer state; a later call loads them and returns at once), "none"
    or "all" (every epoch's file too). While it trains, the run holds the checkpoint's lock (a second process
    starting the same run waits and then reuses the result) and, on the CPU, its fair share of the cores
    (:mod:`labkit.training.sharing`).
    ``channels_last`` (default: on CUDA) converts the model's memory format; the batches
    should then be channels-last too (``Batches(channels_last=True)``). ``precision``: "fp32", or "bf16" for
    bf16 autocast of the forward pass and the loss (:func:`labkit.device.resolve_precision` picks it).
    """
    device = device or next(model.parameters()).device
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the activations every step (see there)
    loss_terms = loss_terms if loss_terms is not None else [cross_entropy_term()]
    if accumulate != "epoch" and (not isinstance(accumulate, int) or accumulate < 1):
        raise ValueError(f"accumulate={accumulate!r} is not allowed; allowed: an integer >= 1 or 'epoch'")
    if keep_checkpoints not in KEEP_CHECKPOINTS:
        raise ValueError(f"keep_checkpoints={keep_checkpoints!r} is not allowed; allowed: "
                         f"{', '.join(map(repr, KEEP_CHECKPOINTS))}")
    if channels_last if channels_last is not None else device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    run = dict(model=model, train=train, epochs=epochs, optimizer=optimizer, loss_terms=loss_terms, val=val,
               accumulate=accumulate, gradient_flow=gradient_flow, on_update=on_update, device=device,
               progress=progress, desc=desc, precision=precision)
    if checkpoint is None:
        return _train(History(), 0, None, None, **run)
    path = Path(checkpoint)
    with run_lock(path):
        source = ckpt.source_hashes(model)  # before any checkpoint is loaded: the weights the run starts from
        history, start, threads = History(), 0, None
        if path.exists():
            try:
                state = ckpt.load(path, model, optimizer, loss_terms, gradient_flow, source)
            except ckpt.StaleCheckpoint as err:
                warnings.warn(f"training again: {err}")
                state = None
            if state is not None:
                start, history, threads = state["epoch"], History.from_dict(state["history"]), state["threads"]
                history.resumed_from_epoch = start
                if state["final"]:
                    if keep_checkpoints == "none":
                        path.unlink(missing_ok=True)
                    return history
        if history.status != "diverged" and start < epochs:
            save = _saver(path, keep_checkpoints, model, optimizer, loss_terms, gradient_flow)
            history = _train(history, start, threads, save, **run)
        if keep_checkpoints == "none":
            path.unlink(missing_ok=True)
        else:
            ckpt.save_final(path, len(history.epochs), model, loss_terms, history.to_dict(), gradient_flow, source)
        return history


def _saver(path: Path, keep: str, model, optimizer, loss_terms, gradient_flow):
    def save(epoch: int, history: History) -> None:
        ckpt.save_training(path, epoch, model, optimizer, loss_terms, history.to_dict(), gradient_flow,
                           history.threads)
        if keep == "all":
            ckpt.keep_epoch(path, epoch)
    return save


def _train(history: History, start: int, threads: int | None, save, *, model, train, epochs, optimizer,
           loss_terms, val, accumulate, gradient_flow, on_update, device, progress, desc, precision) -> History:
    """Epochs ``start``..``epochs - 1``, with ``save(epoch, history)`` after each completed one; on the CPU
    with the run's fair share of threads, or ``threads`` (a resumed run's own)."""
    with cpu_threads(device, threads) as threads:
        history.threads = threads
        t0 = time.perf_counter() - history.seconds
        bar = _progress_bar((epochs - start) * len(train), desc, progress)
        try:
            for epoch in range(start, epochs):
                try:
                    stats = train_one_epoch(model, train, optimizer, loss_terms, epoch=epoch, history=history,
                                            device=device, accumulate=accumulate, gradient_flow=gradient_flow,
                                            on_update=on_update, progress=bar, precision=precision)
                except Diverged as err:
                    history.status, history.message = "diverged", str(err)
                    history.seconds = time.perf_counter() - t0
                    return history
                history.images += stats.pop("images")
                row = {"epoch": epoch + 1, **stats}
                if val is not None:
                    v = evaluate(model, val, device, precision)
                    row.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
                history.seconds = time.perf_counter() - t0
                row["seconds"] = history.seconds
                history.epochs.append(row)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("train_loss", "val_accuracy")})
                if save is not None:
                    save(epoch + 1, history)
        finally:
            if bar is not None:
                bar.close()
    return history
