"""Reports: Markdown tables of cross-validation results and checkpoints (``neuroauth report``), and
the console summaries ``train``, ``evaluate`` and ``crossval`` print."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(stat: dict | None, digits: int = 3) -> str:
    """A mean with its 95 % interval, or the single value of one split."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("low") is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


# -- crossval tables -----------------------------------------------------------------------------------


def _groups(result: dict):
    montage = f"{len(result['montage'])} ch"
    for group, entry in result["summary"].items():
        yield montage, group, entry


def verification_table(results: Sequence[dict]) -> str:
    rows = [
        "| montage | test people (splits) | model | window EER | EER, 10 windows | AUROC | P@1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for montage, group, entry in _groups(result):
            f = entry["figures"]
            label = f"{group}: {entry['test_people']} ({entry['splits']})"
            for name, prefix in (
                ("ours", ""),
                ("ours, first state only", "first_state_enrollment.ours."),
                ("no denoiser", "no_denoiser."),
                ("PSD baseline", "baseline_psd."),
            ):
                rows.append(
                    _row(
                        montage,
                        label,
                        name,
                        _ci(f.get(f"{prefix}window_eer")),
                        _ci(f.get(f"{prefix}eer_at.10")),
                        _ci(f.get(f"{prefix}auroc")),
                        _ci(f.get(f"{prefix}p_at_1")),
                    )
                )
    return "\n".join(rows)


def state_table(results: Sequence[dict]) -> str:
    """Window EER by probe state, for every-state and first-state enrollment."""
    rows = [
        "| montage | test people | probe state | every state enrolled | first state only |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        for montage, group, entry in _groups(result):
            f = entry["figures"]
            states = sorted(
                {k.split(".")[1] for k in f if k.startswith("window_eer_by_state.")},
            )
            for state in states:
                rows.append(
                    _row(
                        montage,
                        group,
                        state,
                        _ci(f.get(f"window_eer_by_state.{state}")),
                        _ci(f.get(f"first_state_enrollment.ours.window_eer_by_state.{state}")),
                    )
                )
    return "\n".join(rows)


def _normalisations(f: dict) -> list[tuple[str, str]]:
    """``(label, key prefix)`` of every normalisation a result's continuous figures were taken with:
    the training cohort, then each number of site people, then each one's takeovers by strangers."""
    found = [("training cohort", "continuous.")] if "continuous.false_lockouts_per_hour" in f else []
    sites = sorted(
        {k.split(".")[1] for k in f if k.startswith("continuous_site.")},
        key=lambda n: (n == "all", int(n) if n.isdigit() else 0),
    )
    for n in sites:
        found.append((f"site, {n} people", f"continuous_site.{n}."))
    for n in sites:
        if f"continuous_site.{n}.strangers.false_lockouts_per_hour" in f:
            found.append((f"site, {n} people: takeovers by others", f"continuous_site.{n}.strangers."))
    return found


def continuous_table(results: Sequence[dict]) -> str:
    rows = [
        "| montage | test people | normalised against | window EER | owner false lock-outs / h (promised) "
        "| owner unlocked | owners never unlocked | time to lock, median / p95 (s) | takeovers never "
        "locked (share) | impostor unlocks / h | owner EEG (h) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for montage, group, entry in _groups(result):
            f = entry["figures"]
            for label, p in _normalisations(f):
                rows.append(
                    _row(
                        montage,
                        group,
                        label,
                        _ci(f.get(f"{p}window_eer")),
                        f"{_ci(f[p + 'false_lockouts_per_hour'], 1)} "
                        f"({_ci(f.get(p + 'promised.false_lockouts_per_hour'), 1)})",
                        _ci(f.get(p + "owner_unlocked_share"), 2),
                        _ci(f.get(p + "owners_never_unlocked_count"), 1),
                        f"{_ci(f.get(p + 'time_to_lock_s.median'), 1)} / "
                        f"{_ci(f.get(p + 'time_to_lock_s.p95'), 1)}",
                        _ci(f.get(p + "sessions_never_locked_share"), 2),
                        _ci(f.get(p + "impostor_unlocks_per_hour"), 1),
                        _ci(f.get(p + "owner_hours"), 2),
                    )
                )
    return "\n".join(rows) if len(rows) > 2 else ""


def operating_table(results: Sequence[dict]) -> str:
    """The decision at other false lock-out targets: what the calibration promised, what it gave."""
    rows = [
        "| montage | test people | normalised against | target false lock-outs / h | promised: lock-outs "
        "/ h, median lock (s) | measured: lock-outs / h | owner unlocked | owners never unlocked | median / "
        "p95 time to lock (s) | takeovers never locked (share) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for montage, group, entry in _groups(result):
            f = entry["figures"]
            for label, normalised in _normalisations(f):
                prefix = f"{normalised}operating_points."
                # a target is a number that may hold a dot itself ("0.5"): it ends where a name begins
                found = (re.match(r"[\d.]+?(?=\.[a-z])", k[len(prefix) :]) for k in f if k.startswith(prefix))
                targets = sorted({m.group() for m in found if m}, key=float)
                for t in targets:
                    p = f"{prefix}{t}."
                    rows.append(
                        _row(
                            montage,
                            group,
                            label,
                            t,
                            f"{_ci(f.get(p + 'promised.false_lockouts_per_hour'), 1)}, "
                            f"{_ci(f.get(p + 'promised.median_time_to_lock_s'), 0)}",
                            _ci(f.get(p + "false_lockouts_per_hour"), 1),
                            _ci(f.get(p + "owner_unlocked_share"), 2),
                            _ci(f.get(p + "owners_never_unlocked_count"), 1),
                            f"{_ci(f.get(p + 'time_to_lock_s.median'), 0)} / "
                            f"{_ci(f.get(p + 'time_to_lock_s.p95'), 0)}",
                            _ci(f.get(p + "sessions_never_locked_share"), 2),
                        )
                    )
    return "\n".join(rows) if len(rows) > 2 else ""


def noise_table(results: Sequence[dict]) -> str:
    rows = [
        "| montage | test people | noise (0 dB) | SI-SNR in / out (dB) | EER | EER, no denoiser "
        "| EER, PSD baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for montage, group, entry in _groups(result):
            f = entry["figures"]
            kinds = sorted({k.split(".")[1] for k in f if k.startswith("noisy_eer.")})
            for kind in kinds:
                rows.append(
                    _row(
                        montage,
                        group,
                        kind,
                        f"{_ci(f.get(f'si_snr_input_db.{kind}'), 1)} / {_ci(f.get(f'si_snr_db.{kind}'), 1)}",
                        _ci(f.get(f"noisy_eer.{kind}.denoised")),
                        _ci(f.get(f"noisy_eer.{kind}.without_denoiser")),
                        _ci(f.get(f"baseline_psd.noisy_eer.{kind}")),
                    )
                )
    return "\n".join(rows) if len(rows) > 2 else ""


def selection_table(results: Sequence[dict]) -> str:
    """How often each embedder setting was chosen, per montage."""
    rows = ["| montage | chosen features, PCA dim, shrinkage | splits |", "|---|---|---|"]
    for result in results:
        counts: dict[str, int] = {}
        for entry in result["splits"].values():
            chosen = entry["report"].get("embedder_selection")
            if chosen:
                key = (
                    f"{' + '.join(chosen['features'])}, {chosen['pca_dim'] or 'none'}, {chosen['shrinkage']}"
                )
                counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            rows.append(_row(f"{len(result['montage'])} ch", key, str(n)))
    return "\n".join(rows) if len(rows) > 2 else ""


def checkpoint_table(paths: Sequence[Path]) -> str:
    """For checkpoints: the spectral settings chosen and the best of each feature set and dimension."""
    from ..models.checkpoint import load_checkpoint

    rows = [
        "| checkpoint | features, PCA dimension, best shrinkage | inner-CV window EER (mean ± std) |",
        "|---|---|---|",
    ]
    for path in paths:
        model = load_checkpoint(path)
        selection = model.meta["embedder_selection"]
        if "grid" not in selection:  # an embedder without the spectral one: no spectral search
            continue
        grid = sorted(selection["grid"], key=lambda r: (r["eer_mean"], r["eer_std"]))
        best: dict[tuple, dict] = {}
        for r in grid:  # the best shrinkage of each feature set and PCA dimension
            best.setdefault((" + ".join(r["features"]), r["pca_dim"]), r)
        for (features, dim), r in sorted(best.items(), key=lambda item: (item[0][0], item[0][1] or 10**9)):
            chosen = " (chosen)" if r == selection["chosen"] else ""
            rows.append(
                f"| {path.name} | {features}, {dim or 'none (all features)'}, {r['shrinkage']}{chosen} | "
                f"{r['eer_mean']:.3f} ± {r['eer_std']:.3f} |"
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def _with_never_locked_share(result: dict) -> dict:
    """Results written before the never-locked share was a figure: derive it from each split's
    counts and summarise again."""
    from neuroauth.training.continuous import never_locked_share
    from neuroauth.training.crossval import summary

    missing = False
    for entry in result["splits"].values():
        cont = entry["report"].get("continuous")
        if not cont:
            continue
        for figures in (cont, *cont.get("operating_points", {}).values()):
            if "sessions_never_locked_share" not in figures:
                missing = True
                figures["sessions_never_locked_share"] = never_locked_share(
                    figures["sessions_never_locked"], figures["time_to_lock_s"]["n"]
                )
    return {**result, "summary": summary(result["splits"])} if missing else result


def render(crossval_paths: Sequence[Path], checkpoints: Sequence[Path]) -> str:
    results = [_with_never_locked_share(json.loads(Path(p).read_text())) for p in crossval_paths]
    parts = []
    if results:
        parts += [
            "Test people never seen in training; repeated splits: mean [95 % interval] over splits "
            "(corrected for shared people); leave-one-corpus-out: one figure per direction.",
            "",
        ]
        for table in (
            verification_table,
            state_table,
            continuous_table,
            operating_table,
            noise_table,
            selection_table,
        ):
            text = table(results)
            parts += [text, ""] if text else []
    if checkpoints:
        table = checkpoint_table(checkpoints)
        parts += [table, ""] if table else []
    return "\n".join(parts)


# -- console summaries ---------------------------------------------------------------------------------


def format_selection(meta: dict) -> list[str]:
    """What ``train`` chose, in a line or two."""
    lines = []
    chosen = meta["embedder_selection"].get("chosen")
    if chosen is not None:
        lines.append(
            f"spectral embedder settings ({meta['embedder_selection'].get('judged_by', 'cross-validation')}):"
            " "
            f"{' + '.join(chosen['features'])}, PCA {chosen['pca_dim'] or 'none'}, shrinkage "
            f"{chosen['shrinkage']} (window EER {chosen['eer_mean']:.3f} +- {chosen['eer_std']:.3f})"
        )
    learned = meta["embedder_selection"].get("learned", {})
    best = learned.get("chosen")
    if best is not None:
        loss = f", loss {best['loss']}" if "loss" in best else ""
        noise = learned.get("noise")
        eer = f"mean window EER, clean and under {', '.join(noise)}" if noise else "window EER"
        lines.append(
            f"{meta['embedder_choice']} by cross-validation: spectral weight {best['fuse']}{loss} "
            f"({eer} {best['eer_mean']:.3f} +- {best['eer_std']:.3f})"
        )
    return lines


def format_report(report: dict) -> str:
    """A short human-readable summary of an evaluation report."""
    ck = report["checkpoint"]
    lines = [
        f"checkpoint {ck['identity']}: embedder {ck['embedder']}, montage {','.join(ck['montage'])}, "
        f"mamba {'on' if ck['mamba'] else 'off'}",
        f"people: {len(report['subjects'])} of {', '.join(report['corpora'])}",
    ]
    if report.get("seen_in_training"):
        lines.append(
            f"NOTE: {len(report['seen_in_training'])} of these people were in the checkpoint's training "
            "data; these figures are not from unseen people (see `neuroauth crossval` for those)."
        )
    first = report["first_state_enrollment"]["ours"]
    columns = (
        ("ours", report),
        ("first state only", first),
        ("no denoiser", report["no_denoiser"]),
        ("PSD baseline", report["baseline_psd"]),
    )
    lines.append(f"{'':22}" + "".join(f"{name:>18}" for name, _ in columns))
    for key in ("window_eer", "auroc", "p_at_1", "p_at_5"):
        lines.append(f"{key:22}" + "".join(f"{_fmt(r[key]):>18}" for _, r in columns))
    for k in report["eer_at"]:
        lines.append(
            f"{'eer over ' + k + ' windows':22}" + "".join(f"{_fmt(r['eer_at'][k]):>18}" for _, r in columns)
        )
    for state in report["window_eer_by_state"]:
        lines.append(
            f"{'eer, ' + state:22}"
            + "".join(f"{_fmt(r['window_eer_by_state'][state]):>18}" for _, r in columns)
        )
    if report.get("noisy_eer"):
        lines.append(
            f"\n{'noise at 0 dB':14}{'SI-SNR in':>10}{'out':>7}{'EER ours':>10}{'no denoiser':>13}"
            f"{'baseline':>10}"
        )
        for kind, e in report["noisy_eer"].items():
            lines.append(
                f"{kind:14}{report['si_snr_input_db'][kind]:10.1f}{report['si_snr_db'][kind]:7.1f}"
                f"{e['denoised']:10.3f}{e['without_denoiser']:13.3f}"
                f"{report['baseline_psd']['noisy_eer'][kind]:10.3f}"
            )
    return "\n".join(lines)


def format_continuous(report: dict) -> str:
    def span(key):
        v = report[key]
        return (
            "n/a" if v["median"] is None else f"median {v['median']:.1f} s, p95 {v['p95']:.1f} s (n={v['n']})"
        )

    promised = report.get("promised") or {}
    lines = []
    if "cohort_subjects" in report:
        lines.append(
            f"owners: {report['owners']}; calibration cohort: {len(report['cohort_subjects'])} other people"
        )
    lines += [
        f"time to unlock (owner)      {span('time_to_unlock_s')}",
        f"time to lock (takeover)     {span('time_to_lock_s')}"
        + (f"; promised {_fmt(promised.get('median_time_to_lock_s'), 1)} s" if promised else ""),
        f"false lock-outs per hour    {_fmt(report['false_lockouts_per_hour'], 2)} "
        f"({report['false_lockouts']} in {report['owner_hours']:.2f} h of owner EEG)"
        + (f"; promised {promised['false_lockouts_per_hour']:.2f}" if promised else ""),
        f"owner time unlocked         {100 * (report['owner_unlocked_share'] or 0):.0f} %",
        f"impostor unlocks per hour   {_fmt(report['impostor_unlocks_per_hour'], 2)}",
        f"window EER                  {_fmt(report['window_eer'])}",
    ]
    if report["owners_never_unlocked"]:
        lines.append(f"owners never unlocked: {', '.join(report['owners_never_unlocked'])}")
    if report.get("seen_in_training"):
        lines.append(
            f"NOTE: {len(report['seen_in_training'])} of these people were in the checkpoint's training "
            "data; for people the model never saw, see `neuroauth crossval --continuous`."
        )
    return "\n".join(lines)


def format_crossval(result: dict) -> str:
    lines = []
    for group, entry in result["summary"].items():
        f = entry["figures"]
        line = (
            f"{group} ({entry['splits']} split(s), {entry['test_people']} test people): window EER "
            f"{_ci(f.get('window_eer'))}, over 10 windows {_ci(f.get('eer_at.10'))}; first state only "
            f"{_ci(f.get('first_state_enrollment.ours.window_eer'))}; PSD baseline "
            f"{_ci(f.get('baseline_psd.window_eer'))}"
        )
        if "continuous.false_lockouts_per_hour" in f:
            line += (
                f"\n    false lock-outs/h {_ci(f['continuous.false_lockouts_per_hour'], 1)}, time to lock "
                f"{_ci(f.get('continuous.time_to_lock_s.median'), 1)} s, owner unlocked "
                f"{_ci(f.get('continuous.owner_unlocked_share'), 2)}"
            )
        lines.append(line)
    return "\n".join(lines)
