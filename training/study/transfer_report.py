"""Markdown tables of the transfer study (``neuroauth report --transfer``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def _ci(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("low") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def recipe_table(result: dict, figure: str = "eer_all") -> str:
    """Per recipe, ``figure`` in every group: each corpus's repeated splits, then each
    leave-one-corpus-out direction."""
    groups = [(name, entry) for part in ("splits", "loco") for name, entry in result.get(part, {}).items()]
    if not groups:
        return ""
    rows = [
        "| recipe | " + " | ".join(f"{name} ({entry['n_test']} tested)" for name, entry in groups) + " |",
        "|---" * (len(groups) + 1) + "|",
    ]
    for label in result["recipes"]:
        cells = [_ci(entry["recipes"].get(label, {}).get(figure)) for _, entry in groups]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def learning_curve_table(result: dict) -> str:
    """Window EER against the number of training people, per test corpus."""
    curve = result.get("learning_curve") or {}
    if not curve:
        return ""
    sizes = sorted({int(s) for per in curve.values() for s in per})
    rows = ["| training people | " + " | ".join(curve) + " |", "|---" * (len(curve) + 1) + "|"]
    for size in sizes:
        rows.append(f"| {size} | " + " | ".join(_ci(per.get(str(size))) for per in curve.values()) + " |")
    return "\n".join(rows)


def render_transfer(paths: Sequence[Path]) -> str:
    parts = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        montage = f"{len(result['montage'])} ch"
        for title, table in (
            (f"{montage}, window EER per recipe", recipe_table(result)),
            (f"{montage}, EER of 10-window means per recipe", recipe_table(result, "eer_all_10")),
            (f"{montage}, learning curve (window EER)", learning_curve_table(result)),
        ):
            if table:
                parts += [title + ":", "", table, ""]
    return "\n".join(parts)
