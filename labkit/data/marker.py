"""The marker of a generated dataset, ``GENERATED.json`` at its root, and how to read it.

Generated sets (the demo's synthetic ones, and ``labkit data --generate-real-size``'s in the real data's folders)
carry it, so whatever shows results made from them can say so; real data never do. A leaf of the data layer: the
pages, the index and the downloads ask it without importing the generators.
"""
from __future__ import annotations

import json
from pathlib import Path

MARKER = "GENERATED.json"


def generated_marker(root) -> dict | None:
    """The marker of the generated dataset at ``root``, or at its parent (a ``data_dir`` may name the folder inside,
    ``stl10_binary/`` or ``tiny-imagenet-200/``); None for real data. The demo's synthetic sets have markers too;
    a real-size one (:func:`is_real_size`) has ``"real_size": true``."""
    for folder in (Path(root), Path(root).parent):
        try:
            marker = json.loads((folder / MARKER).read_text())
        except (OSError, ValueError):  # absent or unreadable: no marker here
            continue
        if isinstance(marker, dict):
            return marker
    return None


def is_real_size(marker: dict | None) -> bool:
    """Whether ``marker`` is ``labkit data --generate-real-size``'s: the real counts and sizes, for timing."""
    return bool(marker and marker.get("real_size") is True)
