"""Checkpoint files: a training checkpoint resumes bit-identically (model, optimizers, loss terms, every
generator); the final state stores what changed and refers to the starting weights by hash; a full disk is one
clear error before anything is written. Hand-made tiny models keep this file fast (its mutation run too)."""
import os
import pickle
import random
import re
import shutil
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.training import checkpoints as ckpt
from labkit.data import Batches
from labkit.training.losses import LossTerm, cross_entropy_term
from labkit.training.optim import make_optimizer
from labkit.paths import DiskSpaceError
from labkit.training.loop import fit

# fit registers every CPU training under data/cache/running (its thread share): keep that out of the checkout
pytestmark = pytest.mark.usefixtures("isolated_root")


# --------------------------------------------------------------------------- hashes of the starting weights

def test_a_hash_follows_dtype_shape_and_values_not_memory_layout():
    x = torch.randn(2, 3, 4, 4)
    assert ckpt.tensor_hash(x) == ckpt.tensor_hash(x.to(memory_format=torch.channels_last))
    t = torch.randn(4, 3).t()  # a transposed view: not contiguous
    assert ckpt.tensor_hash(t) == ckpt.tensor_hash(t.contiguous())
    assert ckpt.tensor_hash(x) != ckpt.tensor_hash(x.reshape(3, 2, 4, 4))  # the shape counts
    assert ckpt.tensor_hash(x) != ckpt.tensor_hash(x.double())  # the dtype counts
    assert ckpt.tensor_hash(torch.tensor(7)) != ckpt.tensor_hash(torch.tensor(8))  # 0-d buffers too
    y = x.clone()
    y[1, 2, 3, 3] += 1
    assert ckpt.tensor_hash(x) != ckpt.tensor_hash(y)  # one value anywhere counts
    assert ckpt.tensor_hash(x) == ckpt.tensor_hash(x.clone())
    # a parameter (requires grad) and a bfloat16 tensor (numpy has no such dtype) hash too
    p = nn.Parameter(x.clone())
    assert ckpt.tensor_hash(p) == ckpt.tensor_hash(x)
    assert ckpt.tensor_hash(x.bfloat16()) != ckpt.tensor_hash(x.half())
    # empty tensors: told apart by shape and dtype
    assert ckpt.tensor_hash(torch.zeros(0, 3)) != ckpt.tensor_hash(torch.zeros(3, 0))
    assert ckpt.tensor_hash(torch.zeros(0)) != ckpt.tensor_hash(torch.zeros(0, dtype=torch.int64))


class Tiny(nn.Module):
    """A frozen first layer (the starting weights), a buffer training leaves alone, then a trainable batch norm
    (whose running statistics change) and head; dropout draws from torch's generator."""

    def __init__(self, body=None, extra=False):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(48, 6)
        if body is not None:
            self.body.load_state_dict(body)
        self.body.requires_grad_(False)
        self.register_buffer("offset", torch.linspace(-1, 1, 6))
        torch.manual_seed(1)
        self.norm = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 4)
        self.drop = nn.Dropout(0.3)
        if extra:
            self.more = nn.Linear(4, 4)

    def forward(self, x):
        return self.head(self.drop(self.norm(self.body(x.flatten(1)) + self.offset)))


FROZEN = {"body.weight", "body.bias", "offset"}
BUFFERS = {"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"}
TRAINABLE = {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def test_source_hashes_cover_what_training_may_leave_alone():
    model = Tiny()
    source = ckpt.source_hashes(model)
    assert set(source) == FROZEN | BUFFERS  # frozen parameters and every buffer, no trainable parameter
    state = model.state_dict()
    assert all(h == ckpt.tensor_hash(state[name]) for name, h in source.items())


# --------------------------------------------------------------------------- generators

def test_each_generator_is_restored_from_a_saved_state(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # numpy's and Python's normal draws come in pairs: each generator now holds a second normal value in its state
    random.gauss(0, 1)
    path = tmp_path / "rng.pt"
    torch.save(ckpt.rng_state(), path)
    # independent copies of each generator, drawn from first: what the restored ones must give
    g = torch.Generator()
    g.set_state(torch.get_rng_state())
    r = np.random.RandomState()
    r.set_state(np.random.get_state())
    p = random.Random()
    p.setstate(random.getstate())
    expected = (torch.rand(5, generator=g), r.standard_normal(3), r.rand(3), [p.gauss(0, 1) for _ in range(3)],
                [p.random() for _ in range(3)])

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    np.random.standard_normal()
    random.gauss(0, 1)
    ckpt.set_rng_state(torch.load(path, weights_only=True))  # as a checkpoint loads: tensors and numbers only
    got = (torch.rand(5), np.random.standard_normal(3), np.random.rand(3), [random.gauss(0, 1) for _ in range(3)],
           [random.random() for _ in range(3)])
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and np.array_equal(got[2], expected[2])
    assert got[3] == expected[3] and got[4] == expected[4]


# --------------------------------------------------------------------------- training and final checkpoints

def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g), torch.arange(n) % 4


class Centers(nn.Module):
    """A loss term's state: a parameter its own optimizer trains and a buffer it updates itself."""

    def __init__(self):
        super().__init__()
        self.centers = nn.Parameter(torch.zeros(4, 4))
        self.register_buffer("seen", torch.zeros(()))


def _term():
    module = Centers()
    return LossTerm("centers", lambda out, y: (out - module.centers[y]).pow(2).mean(), module=module,
                    optimizer=torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9))


def _step(model, optimizer, term, seed=0):
    """One update of the model, the term's own optimizer and buffer."""
    model.train()
    x, y = _batch(seed=seed)
    out = model(x)
    loss = F.cross_entropy(out, y) + term.fn(out, y)
    optimizer.zero_grad(), term.optimizer.zero_grad()
    loss.backward()
    optimizer.step(), term.optimizer.step()
    term.module.seen += len(y)


def _trained(steps=2):
    model, term = Tiny(), _term()
    source = ckpt.source_hashes(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for s in range(steps):
        _step(model, optimizer, term, seed=s)
    return model, optimizer, term, source


def _equal(a, b) -> bool:
    """Nested state dicts (model, optimizer) equal, tensors exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


ROWS = [{"update": 1, "layer": "head", "mean_abs_grad": 0.5, "max_abs_grad": 1.5}]
HISTORY = {"epochs": [{"epoch": 1, "train_loss": 1.25}, {"epoch": 2, "train_loss": 0.75}], "threads": 2}


def test_a_training_checkpoint_resumes_model_optimizers_terms_and_generators(tmp_path):
    model, optimizer, term, _ = _trained()
    path = tmp_path / "run.pt"
    ckpt.save_training(path, 2, model, optimizer, [cross_entropy_term(), term], HISTORY, SimpleNamespace(rows=ROWS),
                       threads=3)
    rng = torch.get_rng_state()
    blob = torch.load(path, weights_only=True)
    assert blob["epoch"] == 2 and blob["final"] is False and blob["threads"] == 3 and blob["history"] == HISTORY
    assert blob["gradient_flow"] == ROWS and set(blob["model"]) == set(model.state_dict())
    assert blob["terms"]["cross_entropy"] == {"module": {}, "optimizer": {}}  # a term without state
    assert blob["terms"]["centers"]["optimizer"]["state"]  # the momentum, for resuming
    # the uninterrupted run goes on: one more step
    _step(model, optimizer, term, seed=5)
    expected = torch.rand(3)

    torch.manual_seed(123)  # another process: a fresh model, optimizers and generator
    fresh, fresh_term, flow = Tiny(), _term(), SimpleNamespace(rows=[])
    fresh_opt = torch.optim.Adam([p for p in fresh.parameters() if p.requires_grad], lr=0.01)
    assert not torch.equal(torch.get_rng_state(), rng)
    state = ckpt.load(path, fresh, fresh_opt, [cross_entropy_term(), fresh_term], flow, ckpt.source_hashes(fresh))
    assert state == {"epoch": 2, "final": False, "history": HISTORY, "threads": 3}
    assert flow.rows == ROWS
    assert torch.equal(torch.get_rng_state(), rng)
    _step(fresh, fresh_opt, fresh_term, seed=5)
    assert _equal(fresh.state_dict(), model.state_dict())  # bit-identical: Adam's moments came back
    assert _equal(fresh_opt.state_dict(), optimizer.state_dict())
    assert _equal(fresh_term.module.state_dict(), term.module.state_dict())  # its SGD momentum came back
    assert torch.equal(torch.rand(3), expected)


def test_the_final_state_stores_what_changed_and_refers_to_the_rest(tmp_path):
    model, optimizer, term, source = _trained()
    path = tmp_path / "q1-finetune-0123456789abcdef.pt"
    ckpt.save_final(path, 3, model, [cross_entropy_term(), term], HISTORY, SimpleNamespace(rows=ROWS), source)
    blob = torch.load(path, weights_only=True)
    assert blob["final"] is True and "optimizer" not in blob and "rng" not in blob
    assert blob["epoch"] == 3 and blob["threads"] == 2 and blob["history"] == HISTORY and blob["gradient_flow"] == ROWS
    assert set(blob["model"]) == TRAINABLE | BUFFERS  # the trained parameters and the buffers that changed
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in blob["model"].items())
    assert blob["source"] == {k: source[k] for k in FROZEN}  # the rest by hash only
    assert blob["terms"]["centers"]["optimizer"] == {} and _equal(blob["terms"]["centers"]["module"],
                                                                  term.module.state_dict())

    # a re-run builds the model again (the starting weights, a fresh head) and loads the final state
    fresh, fresh_term, flow = Tiny(), _term(), SimpleNamespace(rows=[])
    loaded = ckpt.load(path, fresh, None, [cross_entropy_term(), fresh_term], flow, ckpt.source_hashes(fresh))
    assert loaded == {"epoch": 3, "final": True, "history": HISTORY, "threads": 2}
    assert _equal(fresh.state_dict(), state) and flow.rows == ROWS
    assert _equal(fresh_term.module.state_dict(), term.module.state_dict())
    assert not fresh_term.optimizer.state_dict()["state"]  # no optimizer in a final state: nothing loaded


def test_a_changed_frozen_entry_is_stored_not_referenced(tmp_path):
    model, _, term, source = _trained(steps=1)
    with torch.no_grad():
        model.offset += 1  # a buffer changed by training after all
    path = tmp_path / "run.pt"
    ckpt.save_final(path, 1, model, [term], HISTORY, None, source)
    blob = torch.load(path, weights_only=True)
    assert "offset" in blob["model"] and set(blob["source"]) == {"body.weight", "body.bias"}
    assert blob["gradient_flow"] == []
    fresh = Tiny()
    ckpt.load(path, fresh, None, [_term()], None, ckpt.source_hashes(fresh))
    assert torch.equal(fresh.offset, model.offset)


def test_stale_references_and_other_entries_are_refused_naming_them(tmp_path):
    model, _, term, source = _trained(steps=1)
    path = tmp_path / "run.pt"
    ckpt.save_final(path, 1, model, [term], HISTORY, None, source)
    other = Tiny(body={k: v + 1 for k, v in Tiny().body.state_dict().items()})  # other starting weights
    with pytest.raises(ckpt.StaleCheckpoint, match=r"^run\.pt: 2 stored-by-reference weight\(s\) differ from the "
                                                   r"model's starting weights \(e\.g\. body\.bias\)$"):
        ckpt.load(path, other, None, [_term()], None, ckpt.source_hashes(other))
    bigger = Tiny(extra=True)  # the same starting weights, an entry the checkpoint does not have
    with pytest.raises(ckpt.StaleCheckpoint, match=r"^run\.pt: its entries do not match the model's$"):
        ckpt.load(path, bigger, None, [_term()], None, ckpt.source_hashes(bigger))
    assert torch.equal(bigger.head.weight, Tiny().head.weight)  # refused before loading anything


def test_load_marks_the_file_as_used_and_refuses_pickled_code(tmp_path, monkeypatch):
    model, optimizer, term, source = _trained(steps=1)
    path = tmp_path / "run.pt"
    ckpt.save_training(path, 1, model, optimizer, [term], HISTORY, None, None)
    os.utime(path, (1e9, 1e9))  # last used in 2001
    fresh = Tiny()
    ckpt.load(path, fresh, torch.optim.Adam([p for p in fresh.parameters() if p.requires_grad]), [_term()], None,
              source)
    assert path.stat().st_mtime > 1.7e9  # for `python -m labkit cache --prune`
    torch.save({"epoch": 1, "final": False, "history": SimpleNamespace()}, tmp_path / "evil.pt")  # not plain data
    # refused even where torch's own default unpickles anything (torch < 2.6, or this variable set)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load(tmp_path / "evil.pt", Tiny(), None, [], None, source)


def test_a_checkpoint_written_on_a_gpu_loads_on_a_machine_without_one(tmp_path, monkeypatch):
    """A final state trained on a GPU, re-rendered on a laptop: its tensors are read onto the CPU."""
    model, _, term, source = _trained(steps=1)
    path = tmp_path / "run.pt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")  # as torch.save tags CUDA tensors
        ckpt.save_final(path, 1, model, [term], HISTORY, None, source)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fresh = Tiny()
    ckpt.load(path, fresh, None, [_term()], None, ckpt.source_hashes(fresh))
    assert _equal(fresh.state_dict(), model.state_dict())


def test_keep_epoch_keeps_each_epochs_file_as_it_was(tmp_path, monkeypatch):
    model, optimizer, term, _ = _trained(steps=1)
    folder = tmp_path / "checkpoints"
    path = folder / "q3-adam-0123456789abcdef.pt"
    saved = {}
    for epoch in (1, 2):
        ckpt.save_training(path, epoch, model, optimizer, [term], HISTORY, None, None)
        ckpt.keep_epoch(path, epoch)
        saved[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        assert os.path.samefile(path, folder / f"q3-adam-0123456789abcdef.epoch{epoch}.pt")  # a link: no copy
        _step(model, optimizer, term, seed=epoch)
    ckpt.save_training(path, 3, model, optimizer, [term], HISTORY, None, None)
    assert sorted(p.name for p in folder.iterdir()) == [
        "q3-adam-0123456789abcdef.epoch1.pt", "q3-adam-0123456789abcdef.epoch2.pt", "q3-adam-0123456789abcdef.pt"]
    for epoch in (1, 2):
        blob = torch.load(ckpt.epoch_path(path, epoch), weights_only=True)
        assert blob["epoch"] == epoch and _equal(blob["model"], saved[epoch])

    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)  # a filesystem without hard links: a copy, replacing the old one
    ckpt.keep_epoch(path, 2)
    copy = folder / "q3-adam-0123456789abcdef.epoch2.pt"
    assert not os.path.samefile(path, copy) and copy.read_bytes() == path.read_bytes()
    ckpt.keep_epoch(path, 4)
    assert torch.load(ckpt.epoch_path(path, 4), weights_only=True)["epoch"] == 3


def test_a_full_disk_is_one_clear_error_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**12, 10**12 - 1000, 1000))
    model, optimizer, term, _ = _trained(steps=1)
    path = tmp_path / "checkpoints" / "q3-adam-0123456789abcdef.pt"
    with pytest.raises(DiskSpaceError) as err:
        ckpt.save_training(path, 1, model, optimizer, [term], HISTORY, None, None)
    message = str(err.value)
    assert message.startswith(f"the checkpoint {path} needs ")  # the path, the space needed and free
    assert re.search(r"needs 0\.00 GB but \S+ has 0\.00 GB free", message), message
    assert message.endswith(" `python -m labkit cache --prune` removes the checkpoints of runs not used for a "
                            "week."), message
    assert not path.parent.exists() or not list(path.parent.iterdir())  # nothing written, no temporary left


def test_the_cli_prints_a_full_disk_as_one_line():
    """The CLI shortens a LabkitError to one line (tests/test_cli.py); a full disk is one."""
    from labkit.errors import LabkitError
    assert issubclass(DiskSpaceError, LabkitError)


# --------------------------------------------------------------------------- through fit

def _fit(path, body=None, epochs=3, stop_at=None, keep="final"):
    """A run that draws from every generator: dropout (torch), a sampler (numpy's global one), and a loss
    weight from Python's."""
    model = Tiny(body)
    images = torch.randint(0, 255, (16, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(16) % 4

    class Sampler:
        def __iter__(self):
            return iter(np.random.permutation(16).tolist())

    def jitter(out, y):
        return 0.01 * random.random() * out.logits.pow(2).mean()

    def stop(update, _model):
        if update == stop_at:
            raise KeyboardInterrupt

    history = fit(model, Batches(images, labels, 8, order=Sampler()), epochs=epochs,
                  optimizer=make_optimizer("adam", [p for p in model.parameters() if p.requires_grad], 1e-2),
                  loss_terms=[cross_entropy_term(), LossTerm("jitter", jitter)], checkpoint=path,
                  keep_checkpoints=keep, on_update=stop, progress=False)
    return model, history


def test_a_resumed_run_ends_bit_identical_and_a_rerun_loads_the_final_state(tmp_path):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    straight, _ = _fit(tmp_path / "straight.pt")
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "resumed.pt", stop_at=5)  # in the third epoch (2 updates per epoch)
    torch.manual_seed(7), np.random.seed(7), random.seed(7)  # other generator states: the checkpoint restores them
    resumed, history = _fit(tmp_path / "resumed.pt")
    assert history.resumed_from_epoch == 2 and len(history.epochs) == 3
    assert _equal(straight.state_dict(), resumed.state_dict())
    again, history = _fit(tmp_path / "resumed.pt", stop_at=1)  # the final state: nothing trains
    assert history.resumed_from_epoch == 3 and _equal(straight.state_dict(), again.state_dict())


def test_other_starting_weights_are_noticed_and_the_run_trains_again(tmp_path):
    path = tmp_path / "run.pt"
    _fit(path, epochs=1)
    changed = {k: v + 1 if k == "bias" else v for k, v in Tiny().body.state_dict().items()}
    with pytest.warns(UserWarning, match=r"training again: run\.pt: 1 stored-by-reference weight\(s\) differ"):
        _, history = _fit(path, body=changed, epochs=1)
    assert history.resumed_from_epoch == 0 and len(history.epochs) == 1
