"""The original report's claims (``claims.yaml``), judged with tests that answer the question asked.

A claim compares runs ("fine-tuning beats the SVM"), keeps its direction, and gets one verdict:

- ``reproduced``: our data support the claimed direction (significant after Holm, or for "similar" the 90 %
  interval of the difference inside the margin);
- ``contradicted``: significant in the other direction (or, for "similar", a significant difference);
- ``inconclusive``: within noise; ``min_detectable`` says how large a difference the test could have seen;
- ``not run``: a run it needs was skipped, failed or diverged.

The test depends on what can be judged. With two or more training seeds on both sides: the paired t-test over
the per-seed accuracies (:func:`labkit.metrics.seed_test`), which judges recipes. A trained recipe against a
deterministic method (Q1's SVM and zero-shot rules, one sample): a one-sample t-test of the per-seed differences.
Two deterministic methods: McNemar on the same test images, which is then the recipe test. One training seed:
McNemar can only say whether two trained networks differ on this test set, never whether two recipes do, so
such a claim stays inconclusive and says so. Holm corrects over a notebook's claims.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from labkit import metrics
from labkit.questions.experiments import accuracies_by_seed, holm, pair_test
from labkit.questions.reference import original_test_images, reference_accuracy
from labkit.text import percent

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
COLUMNS = ["notebook", "claim_id", "claim", "runs", "direction", "stated", "original", "ours", "seeds", "test",
           "mean_difference", "ci_low", "ci_high", "min_detectable", "p", "p_holm", "verdict", "confounds"]
RANKING_TEST = "every adjacent pair above"  # a ranking's own row: reproduced only when every pair is
# A layer's mean gradient this far below the largest layer's counts as not reaching it.
FLOW_RATIO = 1e-3


@functools.cache
def _data() -> dict:
    return yaml.safe_load((Path(__file__).parent / "claims.yaml").read_text(encoding="utf-8"))


def claims(notebook: str) -> list[dict]:
    """The notebook's claims, as written in ``claims.yaml``."""
    return list(_data().get(notebook, []))


def verdict(direction: str, d, p_holm, low, high, recipe: bool, margin: float) -> str:
    """reproduced, contradicted or inconclusive: direction always counts."""
    if d is None or p_holm is None:
        return "inconclusive"
    significant = p_holm < metrics.SIGNIFICANCE
    if direction == "≈":
        if significant:
            return "contradicted"
        return "reproduced" if recipe and -margin <= low and high <= margin else "inconclusive"
    if not recipe or not significant:
        return "inconclusive"
    return "reproduced" if (d > 0) == (direction == ">") else "contradicted"


def _flow_row(claim: dict, outcomes: dict) -> dict:
    """Gradients reach the first layer: every named run's first layer's mean gradient is at least FLOW_RATIO of
    its largest layer's."""
    names = claim["a"] if isinstance(claim["a"], list) else [claim["a"]]
    runs_cell = ", ".join(names)
    ratios = {}
    for name in names:
        runs = outcomes.get(name)
        if not runs or runs[0].error or "gradient_flow" not in runs[0].artifacts:
            return {"runs": runs_cell, "verdict": "not run", "test": f"gradient flow of {name}: not run"}
        flow = runs[0].artifacts["gradient_flow"]["mean_abs_grad"].to_numpy()
        ratios[name] = float(flow[0] / flow.max()) if len(flow) and flow.max() > 0 else 0.0
    worst = min(ratios, key=ratios.get)
    ok = ratios[worst] >= FLOW_RATIO
    return {"runs": runs_cell, "verdict": "reproduced" if ok else "contradicted",
            "ours": f"first layer at {ratios[worst]:.3g} of the largest layer's mean gradient at worst ({worst})",
            "test": f"first layer's mean |gradient| >= {FLOW_RATIO:g} x the largest layer's, in every run (first seed)"}


def judge(notebook: str, outcomes: dict, deterministic=(), real_data: bool = False) -> pd.DataFrame:
    """Every claim of the notebook judged on these outcomes (``{run: [Outcome per seed]}``): the claims.csv rows,
    and one row per ranking (reproduced only when every adjacent pair is)."""
    margin = _data().get("similar_margin", 0.02)
    deterministic = set(deterministic)
    rows = []
    for claim in claims(notebook):
        runs_b = claim.get("b") if isinstance(claim.get("b"), list) else [claim.get("b")]
        base = {"notebook": notebook, "claim_id": claim["id"], "claim": claim["claim"], "direction": claim["direction"],
                "stated": bool(claim.get("stated")), "confounds": claim.get("confounds", ""),
                "ranking": claim.get("ranking")}
        kind = claim.get("test", "recipe")
        if kind == "flow":  # its row names its runs: one (a name) or several (a list)
            rows.append({**base, "original": "", **_flow_row(claim, outcomes)})
            continue
        if kind == "causal":
            rows.append({**base, "runs": f"{claim['a']} vs {claim['b']}", "original": "", "verdict": "inconclusive",
                         "test": "not testable from these runs: batch size changes the update count and the "
                                 "gradient noise together (see the gradient magnitude against batch size)"})
            continue
        for b in runs_b:
            a = claim["a"]
            row = {**base, "runs": f"{a} {claim['direction']} {b}", "original": _original(notebook, a, b)}
            if len(runs_b) > 1:
                row["claim_id"] = f"{claim['id']}:{b}"
            if accuracies_by_seed(outcomes.get(a)) is None or accuracies_by_seed(outcomes.get(b)) is None:
                rows.append({**row, "verdict": "not run", "test": "a run it needs was skipped, failed or diverged"})
                continue
            r = pair_test(outcomes[a], outcomes[b], deterministic, claim["direction"] == "≈", margin)
            rows.append({**row, "ours": _ours(outcomes, a, b, real_data, notebook), "seeds": r["seeds"],
                         "test": r["test"], "mean_difference": r["d"], "ci_low": r["low"], "ci_high": r["high"],
                         "min_detectable": r["min_detectable"], "p": r["p"], "_recipe": r["recipe"]})
    tested = [r for r in rows if r.get("p") is not None]
    for r, p in zip(tested, holm([r["p"] for r in tested])):
        r["p_holm"] = p
        r["verdict"] = verdict(r["direction"], r["mean_difference"], p, r["ci_low"], r["ci_high"], r["_recipe"],
                               margin)
        if not r["_recipe"]:
            differ = "differ" if p < metrics.SIGNIFICANCE else "do not differ"
            r["test"] = (f"McNemar, one seed: these two trained networks {differ} on this test set; one training "
                         f"run cannot judge a recipe")
    for r in rows:
        r.pop("_recipe", None)
    rows += _rankings(rows)
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    return table[COLUMNS + ["ranking"]]


def _rankings(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["ranking"] for r in rows if r.get("ranking")):
        pairs = [r for r in rows if r.get("ranking") == name]
        verdicts = [r.get("verdict") for r in pairs]
        overall = ("not run" if "not run" in verdicts else "contradicted" if "contradicted" in verdicts else
                   "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive")
        chain = " > ".join([pairs[0]["runs"].split(" ")[0]] + [r["runs"].split(" ")[-1] for r in pairs])
        out.append({"notebook": pairs[0]["notebook"], "claim_id": name, "claim": f"the ranking {chain}",
                    "runs": chain, "direction": ">", "stated": all(r["stated"] for r in pairs), "original": "",
                    "test": RANKING_TEST, "verdict": overall, "confounds": "", "ranking": None})
    return out


def _original(notebook: str, a: str, b: str) -> str:
    va, vb = reference_accuracy(notebook, a), reference_accuracy(notebook, b)
    if va is None or vb is None:
        return ""
    return f"{percent(va, 2)} vs {percent(vb, 2)} (on {original_test_images(notebook, a):,} / " \
           f"{original_test_images(notebook, b):,} images)"


def _ours(outcomes: dict, a: str, b: str, real_data: bool, notebook: str) -> str:
    def one(name):
        accs = [o.accuracy for o in outcomes[name]]
        mean = float(np.mean(accs))
        spread = f" ± {percent(np.std(accs, ddof=1))}" if len(accs) > 1 else ""
        text = f"{percent(mean)}{spread} ({len(accs)} seed{'s' if len(accs) > 1 else ''})"
        original = reference_accuracy(notebook, name)
        if real_data and original is not None and len(accs) > 1:
            low, high = metrics.mean_interval(accs)
            text += "; original inside our 95 % interval" if low <= original <= high else "; original outside it"
        return text
    return f"{one(a)} vs {one(b)}"


def counts(table: pd.DataFrame) -> str:
    """"7 reproduced, 2 contradicted, 5 inconclusive, 1 not run" over the claims (a ranking's own row is not
    counted: its pairs are)."""
    rows = table[table["test"] != RANKING_TEST]
    return ", ".join(f"{int((rows['verdict'] == v).sum())} {v}" for v in VERDICTS)


def report(results, runner, P: dict) -> pd.DataFrame:
    """The notebook's claims section: every claim judged on the runner's outcomes, written as ``claims.csv``
    beside metrics.json, shown with the counts; on synthetic data the verdicts test the pipeline, not the claims."""
    from IPython.display import Markdown, display
    from labkit.data.marker import generated_marker
    notebook = results.data["notebook"]
    generated = P.get("data_source") == "real" and generated_marker(runner.data.source) is not None
    table = judge(notebook, runner.outcomes, getattr(runner.question, "DETERMINISTIC", ()),
                  real_data=P.get("data_source") == "real" and not generated)
    results.table(table[COLUMNS], "claims", index=False)
    lead = f"**{counts(table)}.**"
    if P.get("data_source") != "real":
        lead += (" On synthetic data (the demo and smoke profiles) these verdicts test the pipeline, not the "
                 "original's claims.")
    elif generated:
        lead += (" On generated data with the real sizes (`labkit data --generate-real-size`, for timing) these "
                 "verdicts test the pipeline, not the original's claims.")
    display(Markdown(lead), table[["claim", "runs", "original", "ours", "test", "p_holm", "verdict", "confounds"]])
    return table
