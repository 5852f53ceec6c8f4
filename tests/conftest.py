import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"


def zip_bytes(files: dict) -> bytes:
    """An in-memory zip archive of ``{member name: text or bytes}`` (archives for the download tests)."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def torch_seeded():
    """pytest-randomly reseeds random and numpy for each test, not torch: a model built without a seed would
    start from weights that depend on which tests ran before it."""
    import torch
    torch.manual_seed(0)


@pytest.fixture
def samples() -> Path:
    """The real sample files beside the checkout; absent on a user's machine, so tests skip."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {SAMPLES} (only present beside the CI checkout)")
    return SAMPLES


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker takes its share of the cores: two workers
    that each start one OpenMP thread per core busy-wait on each other. The variable reaches the notebook
    kernels and the child processes the tests start."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from labkit.training.sharing import cores, fair_share  # cores(): this process's cores (macOS too)
        threads = fair_share(workers, cores(), torch.get_num_threads())
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


# Fixtures of the tests that run things (notebooks, training, subprocesses, Dask clusters).
RUNS_THINGS = {"isolated_root", "module_root", "same_twice", "tiny"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups; after pytest-randomly's shuffle
def pytest_collection_modifyitems(items):
    """With ``--dist loadgroup`` the tests that share one expensive session fixture run on one worker, so it is
    built once: the smoke report (every notebook, HTML, PDF), and the demo stand-in of the demo-size checks. Under
    xdist the tests that run things are also handed out first (a stable sort: the shuffled order is kept within
    each half), so the run ends on quick tests and both workers finish together instead of one idling."""
    for item in items:
        if "smoke_report" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("smoke_report"))
        elif item.name.startswith("test_demo_sized"):
            item.add_marker(pytest.mark.xdist_group("demo_standin"))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not RUNS_THINGS & set(getattr(item, "fixturenames", ())))


@pytest.fixture(scope="session")
def shared_standin(tmp_path_factory) -> Path:
    """One stand-in weights folder for the whole session, the same for every xdist worker: the weights are keyed
    by their own settings and the code fingerprint, so sharing them never serves a stale result, and each is
    trained once a session (a second worker that asks meanwhile waits on the stand-in's lock)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "standin"  # the workers' common base folder
        folder.mkdir(exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("standin")


def make_root(path: Path, standin: Path) -> Path:
    """A throwaway project root (created): data/ and reports/ of its own, the checkout's notebooks/ linked in (the
    notebooks and their parameter files are code, not state), the session's stand-in weights shared."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "notebooks").symlink_to(ROOT / "notebooks", target_is_directory=True)
    (path / "data" / "cache").mkdir(parents=True)
    (path / "data" / "cache" / "standin").symlink_to(standin, target_is_directory=True)
    return path


@pytest.fixture
def isolated_root(tmp_path, monkeypatch, shared_standin) -> Path:
    """Tests that write data, caches, checkpoints or reports run here, never in the checkout. The root is a
    folder of its own inside ``tmp_path``, so a test that also writes to ``tmp_path`` sees only its files."""
    root = make_root(tmp_path / "root", shared_standin)
    monkeypatch.setenv("LABKIT_ROOT", str(root))
    return root


@pytest.fixture(scope="module")
def module_root(tmp_path_factory, shared_standin, request) -> Path:
    """One throwaway project root for a whole test module (the wiring tests share its decoded smoke data)."""
    with pytest.MonkeyPatch.context() as mp:
        path = make_root(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), shared_standin)
        mp.setenv("LABKIT_ROOT", str(path))
        yield path


class FitSpy:
    """A question module's ``fit`` replaced by a call-through that keeps what reached it (the model, the training
    batches, every keyword: optimizer, validation batches, loss terms, ``accumulate``, checkpoint), the optimizer's
    param_groups as built, the model's state before training, the first epoch's labels in batch order, and the
    input shapes the model saw while training."""

    def __init__(self, monkeypatch, module):
        self.calls = []
        real = module.fit

        def fit(model, train, **kw):
            call = {"model": model, "train": train, **kw, "shapes": [],
                    "groups": [{k: v for k, v in g.items() if k != "params"} for g in kw["optimizer"].param_groups],
                    "start": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "labels_epoch0": train.labels[train.indices()].tolist()}
            hook = model.register_forward_pre_hook(lambda m, args: call["shapes"].append(tuple(args[0].shape))
                                                   if m.training else None)
            try:
                call["history"] = real(model, train, **kw)
            finally:
                hook.remove()
            self.calls.append(call)
            return call["history"]

        monkeypatch.setattr(module, "fit", fit)


@pytest.fixture
def same_twice(tmp_path, monkeypatch, shared_standin):
    """Same-machine determinism at smoke size: a question's runs trained twice, each time from empty caches
    (data, features, checkpoints), give the same predictions, the same training curves and the same rows for
    metrics.json apart from the timing fields. The stand-in weights are shared (their own determinism is
    tested in test_standin.py)."""
    import numpy as np
    import torch

    from labkit.questions.registry import default_parameters

    def check(module, key: str, load, pick) -> None:
        outcomes = []
        for attempt in ("first", "second"):
            monkeypatch.setenv("LABKIT_ROOT", str(make_root(tmp_path / attempt, shared_standin)))
            P = module.parameters(default_parameters(key, "smoke"))
            data = load(P)
            outcomes.append({run.name: module.train_and_test(run, data, torch.device("cpu"))
                             for run in pick(module.plan(P))})
        first, second = outcomes
        from labkit.questions.experiments import summarize
        timing = ["train_seconds", "train_images_per_second"]
        tables = [summarize({name: [o] for name, o in attempt.items()}, key).drop(columns=timing)
                  for attempt in outcomes]
        assert tables[0].equals(tables[1]), (tables[0], tables[1])
        for name, a in first.items():
            b = second[name]
            assert np.array_equal(a.y_pred, b.y_pred), name
            if a.history is not None:
                assert [e["train_loss"] for e in a.history.epochs] == [e["train_loss"] for e in b.history.epochs]

    return check


@pytest.fixture(scope="session")
def smoke_report(tmp_path_factory, shared_standin):
    """One end-to-end report with the smoke profile (every notebook, HTML, PDF, index) under a throwaway root,
    shared by the report and notebook tests so each notebook runs once per session."""
    from labkit.report.pipeline import make_report
    root = make_root(tmp_path_factory.mktemp("smoke-root"), shared_standin)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_ROOT", str(root))  # the kernels inherit it
        code = make_report("smoke")
    return root / "reports" / "smoke", code


@pytest.fixture
def chromium():
    from labkit.report.pipeline import find_chromium
    path = find_chromium()
    if not path:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium where it runs as root)")
    return path


def tiny_resnet(arch: str = "resnet18", weights: str = "none", width: int = 4, num_classes: int = 1000):
    """A ResNet in shape only, for tests of what reaches the code rather than of what transfer learns: the
    submodules labkit uses (conv1, bn1, layer1..layer4 for freezing, avgpool for features, fc for the source
    head), a few hundred weights, so training at smoke size takes a fraction of a second and nothing
    (stand-in weights, ImageNet) has to be trained or fetched first."""
    import torch.nn as nn

    def block(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width)
            self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(2)
            self.layer1, self.layer2 = block(width, width), block(width, 2 * width, 2)
            self.layer3, self.layer4 = block(2 * width, 2 * width), block(2 * width, 4 * width)
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4 * width, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return TinyResNet()
