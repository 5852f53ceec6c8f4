"""``python -m labkit compare A B``: what changed between two reports, run by run, and whether it is more
than noise.

A and B are two profile folders (``reports/demo``), two notebook folders (``reports/demo/q3``) or two sweep
point folders. Each notebook folder holds ``metrics.json`` and ``predictions.npz`` (every run's and seed's
test predictions, see :meth:`labkit.results.Results.predictions`). For every run present on both sides:

- accuracies with their 95 % Wilson intervals, the difference B - A with its 95 % interval, and a test. When
  the two test sets are the same images (same ``test_identity``) the test is paired: McNemar's exact test per
  training seed on the 2 x 2 counts (both right, only A, only B, both wrong), and with two or more common seeds
  the paired t-test over seeds (:func:`labkit.metrics.seed_test`), which judges the recipe rather than two
  trained networks. Otherwise Fisher's exact two-proportion test per seed (unpaired). Holm over the shared
  runs of each notebook, one p per run (the seed test when there is one).
- "changed": its predictions, probabilities, status or any metrics.json number differ (floats within 1e-12
  relative; timings never count), with the settings that differ (``changed_params``).

A deterministic run (Q1's SVM and zero-shot rules) has one seed, so it is one sample. A run failed or diverged
on one side counts as changed and is not tested.
"""
from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labkit import metrics
from labkit.errors import LabkitError
from labkit.questions.experiments import holm
from labkit.paths import atomic_write_text
from labkit.results import same_numbers
from labkit.text import percent

# Notebook parameters that say where or how a notebook ran, not what it computed.
NOT_SETTINGS = {"profile", "output_dir", "data_dir", "device", "keep_checkpoints"}
METRIC_KEYS = ("macro_f1", "auc_macro", "precision_at_1", "map_at_r")
PROVENANCE = ("profile", "git_commit", "code_fingerprint", "weights", "device", "device_name")
CSV_COLUMNS = ["notebook", "run", "seed", "paired", "test", "accuracy_a", "accuracy_b", "difference", "ci_low",
               "ci_high", "p", "p_holm", "changed", "significant", "changed_params"]


class CompareError(LabkitError, ValueError):
    """Two folders that cannot be compared; the message says what to give instead."""


@dataclass
class NotebookResults:
    """One notebook's results: its metrics.json and its predictions.npz."""

    folder: Path
    metrics: dict
    predictions: dict

    @property
    def key(self) -> str:
        return self.metrics.get("notebook", self.folder.name)

    def seeds(self, run: str) -> dict[int, int]:
        """``{seed: row}`` of a run's predictions."""
        return {int(s): i for i, (r, s) in enumerate(zip(self.predictions["run"], self.predictions["seed"]))
                if r == run}


def notebook_folders(folder) -> tuple[str, dict[str, Path]]:
    """``("notebook", {nb: folder})`` for a notebook or sweep point folder (it holds metrics.json), or
    ``("profile", {nb: folder/nb, ...})`` for a report's profile folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompareError(f"{folder} is not a folder; give a report's profile folder (reports/demo), a notebook "
                           f"folder (reports/demo/q3) or a sweep point folder")
    if (folder / "metrics.json").is_file():
        return "notebook", {_notebook_key(folder / "metrics.json"): folder}
    inside = {p.parent.name: p.parent for p in sorted(folder.glob("*/metrics.json"))}
    if not inside:
        raise CompareError(f"{folder} holds no metrics.json, nor do its notebook folders: give a report's profile "
                           f"folder (reports/demo), a notebook folder (reports/demo/q3) or a sweep point folder")
    return "profile", {_notebook_key(p / "metrics.json"): p for p in inside.values()}


def _notebook_key(path: Path) -> str:
    try:
        return json.loads(path.read_text())["notebook"]
    except (ValueError, KeyError) as err:
        raise CompareError(f"{path} is not a labkit metrics.json ({err}); re-run that notebook") from None


def load(folder: Path) -> NotebookResults:
    path = folder / "predictions.npz"
    if not path.is_file():
        raise CompareError(f"{folder} has metrics.json but no predictions.npz (made by an older labkit, or the "
                           f"notebook stopped before its summary): re-run that notebook, then compare")
    with np.load(path, allow_pickle=False) as blob:
        predictions = {k: blob[k] for k in blob.files}
    return NotebookResults(folder, json.loads((folder / "metrics.json").read_text()), predictions)


def compare(a, b) -> dict:
    """Compare two folders (see the module's docstring). Returns a JSON-ready dict: ``notebooks: {nb: ...}``
    with ``rows`` (the CSV's), ``runs`` (one entry per shared run), ``differences`` and the runs and seeds
    present on one side only; the notebooks on one side only; overall ``changed`` and ``significant``."""
    kind_a, folders_a = notebook_folders(a)
    kind_b, folders_b = notebook_folders(b)
    if kind_a != kind_b:
        example = (f"{Path(a) / next(iter(folders_b))} with {b}" if kind_a == "profile" else
                   f"{a} with {Path(b) / next(iter(folders_a))}")
        raise CompareError(f"{a} is a {kind_a} folder and {b} a {kind_b} folder: compare two profile folders or "
                           f"two notebook folders (e.g. {example})")
    if kind_a == "notebook" and set(folders_a) != set(folders_b):
        raise CompareError(f"{a} holds notebook {next(iter(folders_a))} and {b} notebook {next(iter(folders_b))}: "
                           f"compare the same notebook's results")
    shared = [nb for nb in folders_a if nb in folders_b]
    notebooks = {nb: compare_notebook(load(folders_a[nb]), load(folders_b[nb])) for nb in shared}
    return {"a": str(a), "b": str(b), "kind": kind_a, "notebooks": notebooks,
            "notebooks_only_a": [nb for nb in folders_a if nb not in folders_b],
            "notebooks_only_b": [nb for nb in folders_b if nb not in folders_a],
            "changed": any(r["changed"] for n in notebooks.values() for r in n["runs"]),
            "significant": any(r["significant"] for n in notebooks.values() for r in n["runs"])}


def compare_notebook(a: NotebookResults, b: NotebookResults) -> dict:
    paired = str(a.predictions["test_identity"]) == str(b.predictions["test_identity"])
    runs_a, runs_b = a.metrics["runs"], b.metrics["runs"]
    shared = [r for r in runs_a if r in runs_b]
    runs, rows = [], []
    for name in shared:
        run, run_rows = compare_run(name, a, b, paired)
        runs.append(run)
        rows += run_rows
    tested = [r for r in runs if r["p"] is not None]
    for run, p in zip(tested, holm([r["p"] for r in tested])):
        run["p_holm"] = p
        run["significant"] = p < metrics.SIGNIFICANCE
        run["row"]["p_holm"], run["row"]["significant"] = p, run["significant"]
    for run in runs:
        run.pop("row")
    for row in rows:
        row["notebook"] = a.key
    only = {side: {"runs": [r for r in mine if r not in other],
                   "seeds": {r: sorted(set(m.seeds(r)) - set(o.seeds(r))) for r in shared
                             if set(m.seeds(r)) - set(o.seeds(r))}}
            for side, mine, other, m, o in (("a", runs_a, runs_b, a, b), ("b", runs_b, runs_a, b, a))}
    return {"paired": paired, "test_images": [len(a.predictions["labels"]), len(b.predictions["labels"])],
            "runs": runs, "rows": rows, "differences": differences(a.metrics, b.metrics),
            "only_a": only["a"], "only_b": only["b"]}


def compare_run(name: str, a: NotebookResults, b: NotebookResults, paired: bool) -> tuple[dict, list[dict]]:
    """One shared run: a row per common seed (and one over seeds when there are two or more), and the run's
    entry (its run-level row carries the p that goes into Holm)."""
    ma, mb = a.metrics["runs"][name], b.metrics["runs"][name]
    seeds_a, seeds_b = a.seeds(name), b.seeds(name)
    common = sorted(set(seeds_a) & set(seeds_b))
    params = changed_params(name, a.metrics, b.metrics)
    status_changed = ma.get("status") != mb.get("status")
    broken = ("failed", "diverged")
    testable = ma.get("status") not in broken and mb.get("status") not in broken and common
    rows, accs_a, accs_b, counts = [], {}, {}, []
    for seed in common:
        ia, ib = seeds_a[seed], seeds_b[seed]
        pa, pb = a.predictions["predictions"][ia], b.predictions["predictions"][ib]
        ya, yb = a.predictions["labels"], b.predictions["labels"]
        right_a, right_b = pa == ya, pb == yb
        accs_a[seed], accs_b[seed] = float(right_a.mean()), float(right_b.mean())
        same = paired and np.array_equal(pa, pb) and np.array_equal(
            a.predictions["probability"][ia], b.predictions["probability"][ib], equal_nan=True)
        row = {"run": name, "seed": seed, "paired": paired, "accuracy_a": accs_a[seed],
               "accuracy_b": accs_b[seed], "difference": accs_b[seed] - accs_a[seed], "p_holm": None,
               "changed": status_changed or not same, "significant": None, "changed_params": params}
        if paired:
            count = {"both_right": int((right_a & right_b).sum()), "only_a": int((right_a & ~right_b).sum()),
                     "only_b": int((~right_a & right_b).sum()), "both_wrong": int((~right_a & ~right_b).sum())}
            counts.append(count)
            low, high = metrics.paired_difference_interval(count["only_a"], count["only_b"], len(ya))
            row.update(test="mcnemar", p=metrics.mcnemar(ya, pa, pb), ci_low=low, ci_high=high, counts=count)
        else:
            ca, cb = int(right_a.sum()), int(right_b.sum())
            low, high = metrics.unpaired_difference_interval(ca, len(ya), cb, len(yb))
            row.update(test="two-proportion (Fisher)", p=metrics.two_proportion_test(ca, len(ya), cb, len(yb)),
                       ci_low=low, ci_high=high)
        if not testable:
            row.update(test="none", p=None)
        rows.append(row)
    if testable and len(common) >= 2:
        diff, p = metrics.seed_test(accs_b, accs_a)
        low, high = metrics.mean_interval([accs_b[s] - accs_a[s] for s in common])
        rows.append({"run": name, "seed": "all", "paired": True, "test": "seed t-test",
                     "accuracy_a": float(np.mean(list(accs_a.values()))),
                     "accuracy_b": float(np.mean(list(accs_b.values()))), "difference": diff, "ci_low": low,
                     "ci_high": high, "p": p, "p_holm": None, "changed": None, "significant": None,
                     "changed_params": params})
    if not rows:  # failed on a side, or no common seed: listed, not tested
        rows.append({"run": name, "seed": "", "paired": paired, "test": "none", "accuracy_a": ma.get("accuracy"),
                     "accuracy_b": mb.get("accuracy"), "difference": None, "ci_low": None, "ci_high": None,
                     "p": None, "p_holm": None, "changed": None, "significant": None, "changed_params": params})
    changed = status_changed or any(r["changed"] for r in rows if r["changed"] is not None) or \
        not same_numbers(ma, mb) or set(seeds_a) != set(seeds_b)
    rows[-1]["changed"] = changed
    level = rows[-1]
    run = {"run": name, "status_a": ma.get("status"), "status_b": mb.get("status"),
           "accuracy_a": ma.get("accuracy"), "accuracy_b": mb.get("accuracy"),
           "ci_a": [ma.get("accuracy_ci_low"), ma.get("accuracy_ci_high")],
           "ci_b": [mb.get("accuracy_ci_low"), mb.get("accuracy_ci_high")],
           "difference": level["difference"], "ci_low": level["ci_low"], "ci_high": level["ci_high"],
           "test": level["test"], "p": level["p"], "p_holm": None, "seeds": common, "changed": changed,
           "significant": False, "changed_params": params, "counts": counts,
           "metrics": {k: [ma.get(k), mb.get(k)] for k in METRIC_KEYS if k in ma or k in mb},
           "time_ratio": _ratio(mb.get("train_seconds"), ma.get("train_seconds")),
           "per_class": per_class(name, a, b, common) if changed and common else [], "row": level}
    return run, rows


def changed_params(name: str, ma: dict, mb: dict) -> str:
    """The settings that differ for one run: its resolved run settings, and the notebook's own parameters that
    are not run settings (the data's: split seed, sizes), ";"-separated."""
    sa, sb = ma.get("run_settings", {}).get(name, {}), mb.get("run_settings", {}).get(name, {})
    names = {k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)}
    pa, pb = ma.get("params", {}), mb.get("params", {})
    run_keys = {k for s in (*ma.get("run_settings", {}).values(), *mb.get("run_settings", {}).values()) for k in s}
    names |= {k for k in set(pa) | set(pb) if k not in NOT_SETTINGS and not k.startswith("runs")
              and k not in run_keys and k != "seeds" and pa.get(k) != pb.get(k)}
    return ";".join(sorted(names))


def differences(ma: dict, mb: dict) -> dict:
    """What differs between the two sides: provenance, library versions and parameters (``{name: [a, b]}``)."""
    out = {k: [ma.get(k), mb.get(k)] for k in PROVENANCE if ma.get(k) != mb.get(k)}
    va, vb = ma.get("versions", {}), mb.get("versions", {})
    out.update({f"version {k}": [va.get(k), vb.get(k)] for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)})
    pa, pb = ma.get("params", {}), mb.get("params", {})
    # where the results were written always differs; run lists show as each run's changed settings
    shown = [k for k in sorted(set(pa) | set(pb)) if k != "output_dir" and not k.startswith("runs")]
    out.update({f"param {k}": [pa.get(k), pb.get(k)] for k in shown if pa.get(k) != pb.get(k)})
    return out


def per_class(name: str, a: NotebookResults, b: NotebookResults, seeds: list[int]) -> list[dict]:
    """Each class's recall on each side (mean over the common seeds) and its change, for a run that changed."""
    classes = [str(c) for c in a.predictions["classes"]]
    if classes != [str(c) for c in b.predictions["classes"]]:
        return []

    def recall(side: NotebookResults) -> np.ndarray:
        rows = [side.seeds(name)[s] for s in seeds]
        y = side.predictions["labels"]
        return np.mean([metrics.per_class_recall(y, side.predictions["predictions"][i], classes)["recall"]
                        for i in rows], axis=0)

    ra, rb = recall(a), recall(b)
    support = np.bincount(a.predictions["labels"], minlength=len(classes))
    return [{"class": c, "recall_a": float(x), "recall_b": float(y), "delta": float(y - x)}
            for c, x, y, n in zip(classes, ra, rb, support) if n]


def _ratio(num, den) -> float | None:
    return float(num) / float(den) if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den else None


# --------------------------------------------------------------------------- output

def table(result: dict) -> pd.DataFrame:
    """The CSV's rows: one per shared run and common seed, and one over seeds where there are two or more."""
    rows = [{c: row.get(c) for c in CSV_COLUMNS} for nb in result["notebooks"].values() for row in nb["rows"]]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def _pct(v) -> str:
    return percent(v, 2, sign=False)


def _points(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.2f}"


def verdict(run: dict) -> str:
    if run["status_a"] != run["status_b"]:
        return f"status {run['status_a']} -> {run['status_b']}"
    if run["significant"]:
        return "differs beyond noise"
    return "changed, within noise" if run["changed"] else "identical"


def summary_lines(result: dict) -> list[str]:
    """The terminal's view: a table of the shared runs, then what differs and what is on one side only."""
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    for nb, n in result["notebooks"].items():
        kind = ("paired: the same test images" if n["paired"] else
                f"unpaired: different test sets ({n['test_images'][0]} vs {n['test_images'][1]} images)")
        lines += ["", f"{nb} ({kind}; Holm over {sum(r['p'] is not None for r in n['runs'])} run(s))"]
        view = pd.DataFrame([{"run": r["run"], "A %": _pct(r["accuracy_a"]), "B %": _pct(r["accuracy_b"]),
                              "B - A (pts)": _points(r["difference"]),
                              "95 % CI": f"{_points(r['ci_low'])} to {_points(r['ci_high'])}"
                              if r["ci_low"] is not None else "",
                              "test": r["test"], "p (Holm)": f"{r['p_holm']:.3g}" if r["p_holm"] is not None else "",
                              "seeds": len(r["seeds"]), "time B/A": f"{r['time_ratio']:.2f}" if r["time_ratio"] else "",
                              "verdict": verdict(r), "changed settings": r["changed_params"]} for r in n["runs"]])
        lines += view.to_string(index=False).splitlines() if len(view) else ["(no run on both sides)"]
        for r in n["runs"]:
            moved = sorted(r["per_class"], key=lambda c: -abs(c["delta"]))[:5]
            if moved and any(c["delta"] for c in moved):
                lines.append(f"  {r['run']}: per-class recall " + ", ".join(
                    f"{c['class']} {_points(c['delta'])}" for c in moved if c["delta"]))
        for key, (va, vb) in n["differences"].items():
            lines.append(f"  differs: {key}: {_short(va)} -> {_short(vb)}")
        for side in ("a", "b"):
            only = n[f"only_{side}"]
            if only["runs"]:
                lines.append(f"  only in {side.upper()} (not tested): {', '.join(only['runs'])}")
            for run, seeds in only["seeds"].items():
                lines.append(f"  {run}: seed(s) {seeds} only in {side.upper()} (not tested)")
    for side in ("a", "b"):
        if result[f"notebooks_only_{side}"]:
            lines.append(f"notebooks only in {side.upper()}: {', '.join(result[f'notebooks_only_{side}'])}")
    lines.append("")
    lines.append("result: " + ("runs differ beyond noise" if result["significant"] else
                               "some numbers changed, all within noise" if result["changed"] else
                               "every shared run identical"))
    return lines


def _short(value, width: int = 70) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[:width - 1] + "…"


def figure_png(result: dict) -> bytes:
    """A vs B accuracy with 95 % intervals, one line per shared run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [(nb, r) for nb, n in result["notebooks"].items() for r in n["runs"]]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(runs) + 1.4), layout="constrained")
    for side, offset, colour in (("a", -0.15, "#4c72b0"), ("b", 0.15, "#dd8452")):
        ys, xs, lo, hi = [], [], [], []
        for i, (_, r) in enumerate(runs):
            acc, ci = r[f"accuracy_{side}"], r[f"ci_{side}"]
            if acc is None:
                continue
            ys.append(i + offset)
            xs.append(100 * acc)
            lo.append(100 * (acc - ci[0]) if ci[0] is not None else 0)
            hi.append(100 * (ci[1] - acc) if ci[1] is not None else 0)
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=colour, capsize=3, label=side.upper())
    ax.set_yticks(range(len(runs)), [f"{nb} · {r['run']}" for nb, r in runs])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%) with 95 % interval")
    ax.legend(loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result: dict, out: Path) -> tuple[Path, Path]:
    """``compare.csv`` and the self-contained ``compare.html`` in ``out``."""
    from labkit.report.pages import render
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "compare.csv"
    atomic_write_text(csv, table(result).to_csv(index=False))
    for n in result["notebooks"].values():
        for r in n["runs"]:
            r["verdict"] = verdict(r)
    page = render("compare.html.j2", result=result, figure=base64.b64encode(figure_png(result)).decode(),
                  pct=_pct, points=_points, short=_short)
    html = out / "compare.html"
    atomic_write_text(html, page)
    return csv, html


def main(a, b, out, as_json: bool = False, fail_on_change: bool = False, fail_on_significant: bool = False) -> int:
    result = compare(a, b)
    write_outputs(result, Path(out))
    if as_json:
        print(json.dumps(result, default=_json_default))
    else:
        print("\n".join(summary_lines(result)))
        print(f"written: {Path(out) / 'compare.csv'}, {Path(out) / 'compare.html'}")
    if (fail_on_change and result["changed"]) or (fail_on_significant and result["significant"]):
        return 2
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
