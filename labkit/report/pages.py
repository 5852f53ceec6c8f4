"""HTML pages (and the notebooks' weights and generated-data banners) from jinja2 templates (``labkit/report/templates/pages``), autoescaped as nbconvert's own are, with one
shared stylesheet. Python computes numbers and sentences; the templates hold the markup."""
from __future__ import annotations

import functools
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates" / "pages"


def stylesheet() -> str:
    """The pages' one stylesheet, inlined into each page so every page is a single self-contained file."""
    return (TEMPLATES / "style.css").read_text()


@functools.cache
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(name: str, **context) -> str:
    """Render ``templates/pages/<name>`` with ``context`` and the stylesheet (``css``)."""
    return _environment().get_template(name).render(css=stylesheet(), **context)


def banner(weights: str, arch: str, extra: str = ""):
    """The notebooks' visible box naming the weights in use; stand-in weights are never presented as ImageNet's
    (it reads the prepared stand-in's report, never trains it)."""
    from IPython.display import HTML

    from labkit.models import describe_weights
    return HTML(_environment().get_template("banner.html.j2").render(
        imagenet=weights == "imagenet", text=describe_weights(weights, arch), extra=extra).strip())


def reduced_banner(key: str, P: dict):
    """The notebooks' visible box listing what these parameters reduce against the full profile (the original's
    setting), e.g. the cpu profile's sizes and epochs; nothing for the full profile or synthetic data."""
    from IPython.display import HTML

    from labkit.questions.registry import reductions
    changes = reductions(key, P)
    if not changes:
        return HTML("")
    return HTML(_environment().get_template("reduced.html.j2").render(reductions=changes, key=key,
                                                                      profile=P["profile"]).strip())


def data_banner(source):
    """The notebooks' visible box for data generated at the real datasets' sizes (``labkit data
    --generate-real-size``, marked by ``GENERATED.json`` in ``source``, the folder the data came from): they time
    the pipeline, and their accuracies are not results. Real and demo data get nothing (an empty display)."""
    from IPython.display import HTML

    from labkit.data.marker import generated_marker, is_real_size
    marker = generated_marker(source)
    if not is_real_size(marker):
        return HTML("")
    return HTML(_environment().get_template("generated.html.j2").render(
        dataset=marker.get("dataset", "dataset"), date=marker.get("date", "?"), command=marker["generated_by"]).strip())
