"""Plot helpers: each draws on the Axes it is given and returns that Axes (a new one when ``ax=None``)."""
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display in the tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from labkit import plots  # noqa: E402
from labkit.training.loop import History  # noqa: E402

from conftest import ROOT  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _history(train_loss, val_loss=None, updates=()):
    epochs = [{"epoch": i + 1, "train_loss": t, "train_accuracy": 0.5 + 0.1 * i,
               **({"val_loss": val_loss[i], "val_accuracy": 0.4 + 0.1 * i} if val_loss else {})}
              for i, t in enumerate(train_loss)]
    return History(epochs=epochs, updates=[{"update": i + 1, "loss": v} for i, v in enumerate(updates)])


def _curves():
    curve = {"fpr": np.array([0.0, 0.5, 1.0]), "tpr": np.array([0.0, 0.75, 1.0]), "auc": 0.625}
    return {"cat": curve, "dog": {**curve, "auc": 0.75}, "micro": curve, "macro": curve}


def _gradflow():
    return pd.DataFrame({"layer": ["features.0", "features.3", "head.1"], "mean_abs_grad": [1e-3, 1e-2, 1e-1],
                         "max_abs_grad": [1e-2, 1e-1, 1.0]})


def _summary():
    return pd.DataFrame({"accuracy": [0.8, 0.6], "ci_low": [0.7, 0.5], "ci_high": [0.9, 0.7],
                         "original": [0.82, None]}, index=["adam", "sgd"])


# Every helper with small inputs: (name, positional arguments)
CALLS = {
    "confusion_heatmap": lambda: (np.array([[3, 1], [0, 4]]), ["cat", "dog"]),
    "roc_plot": lambda: (_curves(),),
    "training_curves": lambda: ({"run": _history([1.0, 0.5], [1.1, 0.7])},),
    "gradient_flow_plot": lambda: (_gradflow(),),
    "embedding_scatter": lambda: (np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]), [0, 1, 1], ["a", "b"]),
    "bar_with_ci": lambda: (_summary(),),
    "summary_bars": lambda: (_summary(),),
}


def test_every_helper_is_covered():
    public = {name for name in vars(plots) if not name.startswith("_") and callable(getattr(plots, name))
              and getattr(getattr(plots, name), "__module__", "") == "labkit.plots"}
    assert public == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_draws_on_the_given_axes_and_returns_it(name, ax):
    before = len(plt.get_fignums())
    out = getattr(plots, name)(*CALLS[name](), ax=ax)
    assert out is ax
    assert len(plt.get_fignums()) == before  # no new figure
    assert ax.has_data() or ax.texts or ax.collections


@pytest.mark.parametrize("name", sorted(CALLS))
def test_creates_an_axes_when_none_is_given(name):
    before = set(plt.get_fignums())
    out = getattr(plots, name)(*CALLS[name]())
    assert isinstance(out, matplotlib.axes.Axes)
    assert set(plt.get_fignums()) - before == {out.figure.number}


def test_confusion_heatmap_cells_and_annotations(ax):
    m = np.array([[3, 1], [0, 4]])
    plots.confusion_heatmap(m, ["cat", "dog"], ax=ax, title="T")
    assert ax.collections[0].get_array().reshape(2, 2).tolist() == [[3, 1], [0, 4]]
    assert [t.get_text() for t in ax.texts] == ["3", "1", "0", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted", "true", "T")


def test_confusion_heatmap_normalized_rows(ax):
    plots.confusion_heatmap(np.array([[3, 1], [0, 4]]), ["cat", "dog"], ax=ax, normalize=True)
    assert np.allclose(ax.collections[0].get_array().reshape(2, 2), [[0.75, 0.25], [0.0, 1.0]])
    assert [t.get_text() for t in ax.texts] == ["0.75", "0.25", "0.00", "1.00"]


def test_confusion_heatmap_large_drops_numbers_and_thins_labels(ax):
    n = 50
    plots.confusion_heatmap(np.eye(n, dtype=int), [f"c{i}" for i in range(n)], ax=ax)
    assert not ax.texts
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == n and labels[0] == "c0" and labels[1] == "" and labels[2] == "c2"


def test_roc_plot_lines_and_labels(ax):
    plots.roc_plot(_curves(), ax=ax)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:4] == ["cat (AUC 0.625)", "dog (AUC 0.750)", "micro (AUC 0.625)", "macro (AUC 0.625)"]
    assert ax.get_lines()[2].get_linestyle() == "--" and ax.get_lines()[3].get_linestyle() == ":"
    assert ax.get_lines()[-1].get_xydata().tolist() == [[0, 0], [1, 1]]  # the chance diagonal
    assert ax.get_xlim() == (0, 1)


def test_training_curves_per_epoch(ax):
    plots.training_curves({"a": _history([1.0, 0.5], [1.1, 0.7]), "b": _history([2.0]), "empty": History()},
                          "loss", ax=ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["a train", "a validation", "b train"]
    assert lines["a train"].get_xydata().tolist() == [[1, 1.0], [2, 0.5]]
    assert lines["a validation"].get_xydata().tolist() == [[1, 1.1], [2, 0.7]]
    assert ax.get_xlabel() == "epoch" and ax.get_title() == "loss per epoch"


def test_training_curves_per_update_smoothed(ax):
    plots.training_curves({"a": _history([1.0], updates=[4.0, 2.0, 0.0])}, "loss", ax=ax, per_update=True, smooth=2)
    (line,) = ax.get_lines()
    assert line.get_xydata().tolist() == [[1, 4.0], [2, 3.0], [3, 1.0]]  # rolling mean of 2
    assert ax.get_xlabel() == "update"


def test_gradient_flow_plot_layers_in_order(ax):
    summary = _gradflow()
    plots.gradient_flow_plot(summary, ax=ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["features.0", "features.3", "head.1"]
    high, low = ax.containers
    assert [p.get_height() for p in high.patches] == [1e-2, 1e-1, 1.0]
    assert [p.get_height() for p in low.patches] == [1e-3, 1e-2, 1e-1]
    assert ax.get_yscale() == "log"


def test_embedding_scatter_one_group_per_present_class(ax):
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
    plots.embedding_scatter(points, [0, 2, 2], ["a", "b", "c"], ax=ax)
    assert [c.get_label() for c in ax.collections] == ["a", "c"]  # "b" has no point
    assert ax.collections[1].get_offsets().tolist() == [[1.0, 1.0], [2.0, 0.5]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "c"]


def test_bar_with_ci_widths_whiskers_and_reference(ax):
    table = _summary()
    plots.bar_with_ci(table, ax=ax)
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [p.get_width() for p in bars.patches] == [0.8, 0.6]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["adam", "sgd"]
    (ref,) = [c for c in ax.collections if c.get_label() == "original report"]
    offsets = np.ma.filled(ref.get_offsets().astype(float), np.nan)
    assert np.allclose(offsets[0], [0.82, 0]) and np.isnan(offsets[1][0])  # no original number for sgd
    segments = [s[:, 0].tolist() for s in bars.errorbar.lines[2][0].get_segments()]
    assert np.allclose(segments, [[0.7, 0.9], [0.5, 0.7]])
    assert ax.get_xlim() == (0, 1)


def test_a_run_without_accuracy_is_drawn_as_its_status_never_as_a_0_bar(ax):
    table = pd.DataFrame({"accuracy": [0.8, None], "ci_low": [0.7, None], "ci_high": [0.9, None],
                          "status": ["ok", "diverged"], "original": [0.82, 0.43]}, index=["adam", "sgd_bs1"])
    plots.bar_with_ci(table, ax=ax)
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [p.get_width() for p in bars[0].patches] == [0.8]  # only the run with an accuracy has a blue bar
    (hatched,) = [p for c in bars[1:] for p in c.patches]
    assert hatched.get_hatch() == "//" and hatched.get_facecolor()[3] == 0  # an empty, hatched bar
    assert "DIVERGED" in [t.get_text() for t in ax.texts]


def test_bar_with_ci_without_reference_column(ax):
    plots.bar_with_ci(_summary().drop(columns="original"), ax=ax)
    assert not [c for c in ax.collections if c.get_label() == "original report"]


def test_importing_plots_changes_no_global_style():
    code = ("import matplotlib; matplotlib.use('Agg'); import matplotlib as mpl; "
            "before = dict(mpl.rcParams); import labkit.plots; "
            "changed = [k for k, v in mpl.rcParams.items() if str(before[k]) != str(v)]; print(changed)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
