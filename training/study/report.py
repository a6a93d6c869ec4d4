"""Markdown tables of the embedder study (``neuroauth report --embedders``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _ms(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _label(study: dict, candidate: str) -> str:
    """The candidate's name, with the joint-training settings for one that trains the denoiser, and
    the noise its fusion weight was chosen under for a fused one."""
    joint, noise = study.get("joint_training"), study.get("fusion_noise")
    if candidate.startswith("temporal-joint") and joint is not None:
        return f"{candidate} (denoiser rate {joint['denoiser_lr_scale']}, weight {joint['denoise_weight']})"
    if candidate.endswith("+spectral") and noise:
        return f"{candidate} (weight chosen clean and under {', '.join(noise)})"
    return candidate


def _dig(data: dict | None, *keys: str):
    """``data[k1][k2]...``, or None where a level is missing."""
    for key in keys:
        if data is None:
            return None
        data = data.get(key)
    return data


def _montage_name(result: dict) -> str:
    return f"{len(result['montage'])} ch"


def embedder_table(studies: Sequence[dict]) -> str:
    """Every embedder of ``neuroauth embedders`` runs, clean, with its cost, beside the PSD baseline."""
    rows = [
        "| montage | embedder | window EER | AUROC | P@1 | EER, 10 windows | fitting time (s) | "
        "ms per window, alone / in 64 | stored values |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for study in studies:
        name = _montage_name(study)
        baseline = None
        for candidate, data in study["candidates"].items():
            s, folds = data["summary"], data["folds"]
            baseline = s["baseline_psd"]
            cost = s["embed_ms_per_window"]
            rows.append(
                _row(
                    name,
                    _label(study, candidate),
                    _ms(s["window_eer"]),
                    _ms(s["auroc"]),
                    _ms(s["p_at_1"]),
                    _ms(s["eer_at"]["10"]),
                    " / ".join(f"{r['fit_seconds']:.0f}" for r in folds),
                    f"{cost['single']['mean']:.2f} / {cost['batch_64']['mean']:.3f}",
                    " / ".join(dict.fromkeys(f"{r['stored_values']:,}" for r in folds)),  # per fold if unlike
                )
            )
        if baseline is not None:
            rows.append(
                _row(
                    name,
                    "PSD baseline",
                    _ms(baseline["window_eer"]),
                    _ms(baseline["auroc"]),
                    _ms(baseline["p_at_1"]),
                    _ms(baseline["eer_at"]["10"]),
                    "",
                    "",
                    "",
                )
            )
    return "\n".join(rows)


def embedder_noise_table(studies: Sequence[dict]) -> str:
    """Window EER of every embedder per noise type (denoised probes), beside the PSD baseline."""
    kinds = list(next(iter(studies[0]["candidates"].values()))["summary"].get("noisy_eer", {}))
    rows = [
        "| montage | embedder | " + " | ".join(kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for study in studies:
        name = _montage_name(study)
        summaries = {c: d["summary"] for c, d in study["candidates"].items()}
        for candidate, s in summaries.items():
            rows.append(
                _row(
                    name, _label(study, candidate), *(_ms(_dig(s, "noisy_eer", k, "denoised")) for k in kinds)
                )
            )
        any_s = next(iter(summaries.values()))
        rows.append(
            _row(name, "PSD baseline", *(_ms(_dig(any_s, "baseline_psd", "noisy_eer", k)) for k in kinds))
        )
    return "\n".join(rows)


def _fold_reports(studies: Sequence[dict]):
    """``(study, candidate, fold index, fold report)`` for every fold of every candidate."""
    for study in studies:
        for candidate, data in study["candidates"].items():
            for f, report in enumerate(data["folds"]):
                yield study, candidate, f, report


def _by_eer(row: dict) -> tuple[float, float]:
    return row["eer_mean"], row["eer_std"]


def fusion_table(studies: Sequence[dict]) -> str:
    """Per fused candidate and fold: the spectral weight (and loss) its inner cross-validation chose."""
    rows = [
        "| montage | embedder | fold | chosen spectral weight (loss) | inner-CV EER | "
        "best with a learned part: EER (weight, loss) | spectral alone, inner CV | held-out EER |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def loss(row):
        return f", {row['loss']}" if "loss" in row else ""

    for study, candidate, f, report in _fold_reports(studies):
        grid, best = report["fit"].get("grid"), report["fit"].get("chosen")
        if not grid or "fuse" not in grid[0]:
            continue
        learned = min((r for r in grid if r["fuse"] < 1.0), key=_by_eer)
        alone = min((r for r in grid if r["fuse"] == 1.0), key=_by_eer)
        rows.append(
            f"| {_montage_name(study)} | {_label(study, candidate)} | {f + 1} | {best['fuse']}{loss(best)} | "
            f"{_ms({'mean': best['eer_mean'], 'std': best['eer_std']})} | "
            f"{learned['eer_mean']:.3f} ({learned['fuse']}{loss(learned)}) | "
            f"{alone['eer_mean']:.3f} | {report['window_eer']:.3f} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def fusion_condition_table(studies: Sequence[dict]) -> str:
    """Per fused candidate whose weight was chosen under noise, fold and condition: the inner-CV EER
    at the chosen weight, at the best weight for that condition alone, and of the spectral part alone."""
    rows = [
        "| montage | embedder | fold | condition | inner-CV EER at the chosen weight | "
        "best for this condition (weight) | spectral alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for study, candidate, f, report in _fold_reports(studies):
        conditions, chosen = report["fit"].get("conditions"), report["fit"].get("chosen")
        for condition, grid in (conditions or {}).items():
            at = {r["fuse"]: r["eer_mean"] for r in grid}
            best = min(grid, key=_by_eer)
            rows.append(
                f"| {_montage_name(study)} | {_label(study, candidate)} | {f + 1} | {condition} | "
                f"{at[chosen['fuse']]:.3f} ({chosen['fuse']}) | {best['eer_mean']:.3f} ({best['fuse']}) | "
                f"{at[1.0]:.3f} |"
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def int8_table(studies: Sequence[dict]) -> str:
    """Per candidate measured with ``--int8``: EER change, size and cost of the int8 copy, per fold."""
    rows = [
        "| montage | embedder | window EER change, per fold | stored bytes, float -> int8 | "
        "ms per window alone, float -> int8 | in batches of 64 |",
        "|---|---|---|---|---|---|",
    ]
    for study in studies:
        for candidate, data in study["candidates"].items():
            folds = [r for r in data["folds"] if "int8" in r]
            if not folds:
                continue
            q = [r["int8"] for r in folds]

            def cost(reports, key):
                return float(np.mean([r["embed_ms_per_window"][key] for r in reports]))

            rows.append(
                _row(
                    _montage_name(study),
                    _label(study, candidate),
                    " / ".join(f"{r['eer_change']:+.4f}" for r in q),
                    f"{q[0]['float_stored_bytes']:,} -> {q[0]['stored_bytes']:,}",
                    f"{cost(folds, 'single'):.2f} -> {cost(q, 'single'):.2f}",
                    f"{cost(folds, 'batch_64'):.3f} -> {cost(q, 'batch_64'):.3f}",
                )
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def joint_table(studies: Sequence[dict]) -> str:
    """Per candidate that fine-tunes the denoiser, per fold: its SI-SNR gain before and after."""
    rows = [
        "| montage | embedder | fold | denoiser SI-SNR gain before -> after (dB, training subjects) | "
        "held-out EER |",
        "|---|---|---|---|---|",
    ]
    for study, candidate, f, report in _fold_reports(studies):
        gain = report["fit"].get("si_snr_gain_db")
        if gain is not None:
            rows.append(
                _row(
                    _montage_name(study),
                    _label(study, candidate),
                    str(f + 1),
                    f"{gain['before']:.2f} -> {gain['after']:.2f}",
                    f"{report['window_eer']:.3f}",
                )
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def render_embedders(paths: Sequence[Path]) -> str:
    studies = [json.loads(Path(p).read_text()) for p in paths]
    parts = []
    for table in (
        embedder_table,
        embedder_noise_table,
        fusion_table,
        fusion_condition_table,
        int8_table,
        joint_table,
    ):
        text = table(studies)
        parts += [text, ""] if text else []
    return "\n".join(parts)
