"""``python -m labkit cache``: the listing by kind, and pruning that removes checkpoints only, on a temporary
LABKIT_ROOT."""
import os
import time

import pytest

from labkit import cache, cli
from labkit.params import ParameterError
from labkit.training.sharing import run_lock

DAY = 86400
KEY = "0123456789abcdef"


def put(root, relative: str, size: int, days_ago: float = 0.0):
    path = root / "data" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = time.time() - days_ago * DAY
    os.utime(path, (t, t))
    return path


@pytest.fixture
def filled(isolated_root):
    """A cache as a report leaves it, with one old Q2 run (and its per-epoch copy) and a downloaded dataset."""
    standin = isolated_root / "data" / "cache" / "standin"
    standin.unlink()  # this test counts files: not the session's shared stand-in weights, whatever it holds
    standin.mkdir()
    put(isolated_root, "cache/datasets/stl10-aaaa-bbbb.pt", 2_000_000)
    put(isolated_root, "cache/features/resnet50-cccc.pt", 300_000)
    put(isolated_root, "cache/checkpoints/q1-finetune-" + KEY + ".pt", 60_000_000, days_ago=1)
    put(isolated_root, "cache/checkpoints/q2-ce-" + KEY + ".pt", 45_000_000, days_ago=10)
    put(isolated_root, "cache/checkpoints/q2-ce-" + KEY + ".epoch1.pt", 45_000_000, days_ago=10)
    put(isolated_root, "cache/checkpoints/q2-ce_center-" + KEY + ".pt", 45_000_000, days_ago=2)
    put(isolated_root, "cache/checkpoints/q3-adam_b1_0.9_b2_0.99-" + KEY + ".pt", 400_000, days_ago=20)
    put(isolated_root, "cache/notes.txt", 10)
    put(isolated_root, "stl10/stl10_binary/train_X.bin", 5_000, days_ago=30)
    put(isolated_root, "synthetic/stl10/x.bin", 1_000)
    return isolated_root


def test_human_units_and_ages():
    assert [cache.human_size(n) for n in (0, 999, 1_234, 45_000_000, 2_000_000_000, 3e15)] == [
        "0.00B", "999B", "1.23kB", "45.0MB", "2.00GB", "3.00PB"]  # tqdm's format_sizeof
    assert [cache.ago(s) for s in (5, 300, 3 * 3600, 9 * DAY)] == ["just now", "5 min ago", "3 h ago", "9 days ago"]
    assert [cache.parse_age(t) for t in ("7d", "12h", "30m", "2w", "3")] == [7 * DAY, 12 * 3600, 1800, 14 * DAY,
                                                                             3 * DAY]
    with pytest.raises(ParameterError, match=r"--older-than='a week' is not allowed; allowed: a number and a unit"):
        cache.parse_age("a week")


def test_listing_by_kind_with_sizes_and_last_use(filled):
    text = cache.listing()
    lines = text.splitlines()
    assert lines[0] == f"{filled / 'data' / 'cache'}: 198MB in 8 files"
    assert "decoded datasets" in text and "features (Q1)" in text and "other" in text
    checkpoints = next(line for line in lines if line.lstrip().startswith("checkpoints"))
    assert checkpoints.split()[1:3] == ["5", "195MB"] and "(24 h ago)" in checkpoints
    q2 = next(line for line in lines if line.startswith("    q2"))
    assert q2.split()[1:3] == ["3", "135MB"] and "(2 days ago)" in q2  # the group's most recent use
    assert any("data/synthetic/ 1.00kB" in line for line in lines)
    assert any(line.startswith("downloaded datasets (never pruned") and "data/stl10/ 5.00kB" in line for line in lines)
    assert lines[-1].startswith("Remove old checkpoints with `python -m labkit cache --prune`")


def test_prune_by_age_removes_old_runs_with_their_epoch_copies_and_nothing_else(filled, capsys):
    before = {i.path for i in cache.inventory()}
    freed = cache.prune(older_than=7 * DAY)
    out = capsys.readouterr().out.splitlines()
    gone = before - {i.path for i in cache.inventory()}
    assert sorted(p.name for p in gone) == [f"q2-ce-{KEY}.epoch1.pt", f"q2-ce-{KEY}.pt",
                                            f"q3-adam_b1_0.9_b2_0.99-{KEY}.pt"]
    assert freed == 90_400_000
    assert out[0].startswith(f"removed q2-ce-{KEY} (2 file(s), 90.0MB, last used 10 days ago)")
    assert out[-1].startswith("freed 90.4MB; data/cache/ now holds")
    assert (filled / "data" / "stl10" / "stl10_binary" / "train_X.bin").exists()  # a downloaded dataset: never


def test_prune_one_notebook_and_dry_run(filled, capsys):
    assert cache.prune(notebook="q2", dry_run=True) == 135_000_000
    assert capsys.readouterr().out.splitlines()[-1].startswith("would free 135MB; data/cache/ holds")
    assert len([r for r in cache.checkpoint_runs() if r.question == "q2"]) == 2  # nothing removed
    cache.prune(notebook="q2")
    assert [r.question for r in cache.checkpoint_runs()] == ["q1", "q3"]
    cache.prune(older_than=15 * DAY, notebook="q3")  # both conditions
    assert [r.question for r in cache.checkpoint_runs()] == ["q1"]
    with pytest.raises(ParameterError, match="allowed: q1, q2, q3"):
        cache.prune(notebook="q9")
    with pytest.raises(ParameterError, match="say which checkpoints"):
        cache.prune()


def test_prune_keeps_a_run_being_trained(filled, capsys):
    checkpoint = filled / "data" / "cache" / "checkpoints" / f"q2-ce-{KEY}.pt"
    with run_lock(checkpoint):
        cache.prune(notebook="q2")
    assert checkpoint.exists() and f"kept q2-ce-{KEY}: a process is training it now" in capsys.readouterr().out
    assert not checkpoint.with_name(checkpoint.name + ".lock").exists()  # released and removed by its holder


def test_the_command(filled, capsys):
    assert cli.main(["cache"]) == 0
    assert "checkpoints" in capsys.readouterr().out
    assert cli.main(["cache", "--prune"]) == 0  # 7 days by default
    assert [r.question for r in cache.checkpoint_runs()] == ["q1", "q2"]
    assert cli.main(["cache", "--prune", "--notebook", "q1", "--older-than", "12h"]) == 0
    assert [r.question for r in cache.checkpoint_runs()] == ["q2"]


def test_a_used_checkpoint_is_not_old(isolated_root):
    """Loading touches the file: a run that is re-rendered every day is never pruned by age."""
    import torch
    from labkit.data import Batches
    from labkit.models import SmallCNN
    from labkit.training.optim import make_optimizer
    from labkit.training.loop import fit

    path = isolated_root / "data" / "cache" / "checkpoints" / f"q3-adam-{KEY}.pt"
    images, labels = torch.zeros(8, 3, 8, 8, dtype=torch.uint8), torch.arange(8) % 2

    def run():
        model = SmallCNN(width=2, hidden=4)
        return fit(model, Batches(images, labels, 4), epochs=1, optimizer=make_optimizer("sgd", model.parameters(),
                                                                                          0.1),
                   checkpoint=path, progress=False)

    run()
    old = time.time() - 30 * DAY
    os.utime(path, (old, old))
    assert run().resumed_from_epoch == 1  # loaded, not trained
    assert time.time() - path.stat().st_mtime < 60
    cache.prune(older_than=7 * DAY)
    assert path.exists()
