from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from neuroauth.training.crossval import interval, plan_splits, summary
from neuroauth.training.data import Corpus, StateSpec, SubjectData
from neuroauth.training.report import continuous_table, render, verification_table

STATES = (StateSpec("rest", "_1", 60.0), StateSpec("task", "_2", 20.0))


def people(corpus: str, complete: int, single: int = 0) -> list[SubjectData]:
    c = Corpus(corpus, Path(corpus), STATES)
    out = [SubjectData(f"{corpus}/p{i:02d}", ("rec", "rec"), c) for i in range(complete)]
    out += [SubjectData(f"{corpus}/s{i:02d}", ("rec", None), c) for i in range(single)]
    return out


def test_splits_are_subject_disjoint_and_leave_each_corpus_out():
    data = people("a", 12, single=3) + people("b", 10)
    splits = plan_splits(data, repeats=4, seed=0)
    repeated = [s for s in splits if s.kind == "repeated"]
    loco = [s for s in splits if s.kind == "leave-one-corpus-out"]
    assert len(repeated) == 8 and [s.name for s in loco] == ["b -> a", "a -> b"]
    assert [s.corpus for s in splits] == ["a"] * 5 + ["b"] * 5  # a test corpus's splits together
    everyone = {d.subject for d in data}
    for s in splits:
        assert not set(s.training) & set(s.test)
        assert set(s.training) | set(s.test) <= everyone
        assert all(t.startswith(f"{s.corpus}/p") for t in s.test)  # people with one recording never tested
    for s in repeated:
        assert len(s.test) == (12 if s.corpus == "a" else 10) // 2
        assert set(s.training) == everyone - set(s.test)  # every other person, of every corpus
    assert len({s.test for s in repeated if s.corpus == "a"}) > 1  # the halves differ
    b_to_a = loco[0]
    assert set(b_to_a.training) == {d.subject for d in data if d.subject.startswith("b/")}
    assert len(b_to_a.test) == 12
    one = plan_splits(people("a", 12), repeats=3, seed=0)
    assert [s.kind for s in one] == ["repeated"] * 3  # one corpus: nothing to leave out
    with pytest.raises(ValueError, match=r"no corpus has 8 people"):
        plan_splits(people("a", 5), repeats=3, seed=0)


def test_the_interval_is_widened_for_splits_that_share_people():
    values = [0.10, 0.12, 0.08, 0.11, 0.09, 0.13, 0.07, 0.10, 0.12, 0.08]
    from scipy import stats

    plain = stats.t.ppf(0.975, 9) * np.std(values, ddof=1) / np.sqrt(10)
    corrected = interval(values, n_train=50, n_test=50)
    assert corrected["mean"] == pytest.approx(0.1)
    half = corrected["high"] - corrected["mean"]
    assert half == pytest.approx(plain * np.sqrt(1 + 10 * 50 / 50))  # (1/J + n2/n1) / (1/J)
    assert corrected["mean"] - corrected["low"] == pytest.approx(half)
    assert interval([0.2, None], 10, 10) == {"mean": 0.2, "low": None, "high": None, "n": 1}
    assert interval([None], 10, 10)["mean"] is None


def test_crossval_never_fits_or_denoises_with_the_people_it_tests(monkeypatch):
    import neuroauth.training.crossval as cv

    data = people("a", 10, single=2) + people("b", 8)
    denoised_on, fitted_on, tested = [], [], []

    class Net:
        pass

    def fake_stage1(training, options, partial, progress):
        denoised_on.append({d.subject for d in training})
        return cv.Denoiser(Net(), {}, [], [])

    def fake_stage2(training, net, options, denoised, progress):
        fitted_on.append(({d.subject for d in training}, denoised_on[-1]))

        return type("Stage2", (), {"record": {"chosen": None}})()

    def fake_evaluate(model, test, noise_types, progress, embedded):
        tested.append({d.subject for d in test})
        return {"window_eer": 0.1, "seen_in_training": []}, None

    monkeypatch.setattr(cv, "train_stage1", fake_stage1)
    monkeypatch.setattr(cv, "fit_stage2", fake_stage2)
    monkeypatch.setattr(cv, "DenoisedRecordings", lambda net, spec: None)
    monkeypatch.setattr(
        cv, "assemble", lambda stage2, options, training: type("M", (), {"eval": lambda self: self})()
    )
    monkeypatch.setattr(cv, "embedded_people", lambda model, test, progress, gate: None)
    monkeypatch.setattr(cv, "evaluate", fake_evaluate)
    result = cv.crossval(data, cv.TrainOptions(), repeats=2, progress=False)
    assert len(tested) == len(fitted_on) == 2 + 2 + 2  # 2 repeats per corpus, 2 directions
    assert len(denoised_on) == 2  # one denoiser per held-out corpus, reused by its splits
    for test, (fit, denoiser_people) in zip(tested, fitted_on, strict=True):
        assert not test & fit and not test & denoiser_people
    assert set(result["summary"]) == {"a (repeated)", "b (repeated)", "b -> a", "a -> b"}
    assert result["summary"]["a (repeated)"]["figures"]["window_eer"]["mean"] == pytest.approx(0.1)


def _result():
    def report(eer, lockouts):
        return {
            "window_eer": eer,
            "eer_at": {"10": eer / 2},
            "auroc": 0.9,
            "p_at_1": 0.8,
            "window_eer_by_state": {"rest": eer, "task": eer * 2},
            "no_denoiser": {"window_eer": eer + 0.01},
            "baseline_psd": {"window_eer": 0.3},
            "first_state_enrollment": {
                "ours": {"window_eer": eer + 0.05, "window_eer_by_state": {"rest": eer}}
            },
            "continuous": {
                "false_lockouts_per_hour": lockouts,
                "promised": {"false_lockouts_per_hour": 1.0},
                "sessions_never_locked": 2,
                "time_to_lock_s": {"median": 20.0, "n": 8},
                "operating_points": {
                    target: {
                        "promised": {"false_lockouts_per_hour": float(target), "median_time_to_lock_s": 30.0},
                        "false_lockouts_per_hour": lockouts,
                        "sessions_never_locked": 1,
                        "time_to_lock_s": {"median": 25.0, "n": 9},
                    }
                    for target in ("0.5", "2")
                },
            },
            "continuous_site": {
                "10": {
                    "window_eer": eer / 2,
                    "false_lockouts_per_hour": lockouts / 2,
                    "time_to_lock_s": {"median": 12.0, "n": 8},
                    "strangers": {
                        "false_lockouts_per_hour": lockouts / 2,
                        "time_to_lock_s": {"median": 15.0},
                    },
                }
            },
        }

    split = {"kind": "repeated", "corpus": "a", "training": ["x"] * 40, "test": ["y"] * 10}
    reports = {
        f"a split {k}": {"split": split, "report": report(0.1 + 0.02 * k, 2.0 + k)} for k in range(1, 4)
    }
    reports["b -> a"] = {
        "split": {"kind": "leave-one-corpus-out", "corpus": "a", "training": ["x"] * 30, "test": ["y"] * 20},
        "report": report(0.2, 6.0),
    }
    return {"montage": ["T7", "F8", "Cz", "P4"], "splits": reports, "summary": summary(reports)}


def test_the_report_gives_every_split_group_with_its_interval():
    result = _result()
    table = verification_table([result])
    assert "| 4 ch | a (repeated): 10 (3) | ours | 0.140 [" in table
    assert "| 4 ch | b -> a: 20 (1) | ours | 0.200 | 0.100 |" in table  # one split: no interval
    assert "first state only | 0.190 [" in table and "PSD baseline | 0.300" in table
    continuous = continuous_table([result])
    assert "| a (repeated) | training cohort | n/a | 4.0 [" in continuous and "(1.0)" in continuous
    assert "| b -> a | site, 10 people | 0.100 | 3.0 (n/a) |" in continuous
    assert "| b -> a | site, 10 people: takeovers by others | n/a | 3.0 (n/a) | n/a | n/a | 15.0 / n/a |" in (
        continuous
    )
    text = render([], [])
    assert text == ""


def test_the_crossval_json_renders(tmp_path):
    import json

    path = tmp_path / "cv.json"
    path.write_text(json.dumps(_result()))
    text = render([path], [])
    assert "leave-one-corpus-out" in text
    # the never-locked share, absent from older results, is derived from the counts (2 of 2 + 8)
    assert "| 4 ch | b -> a | training cohort | n/a | 6.0 (1.0) | n/a | n/a | 20.0 / n/a | 0.20 |" in text
    assert "| 4 ch | a (repeated) | training cohort | 0.5 | 0.5 [" in text
    assert "| 4 ch | b -> a | training cohort | 2 | 2.0, 30 | 6.0 |" in text
    assert "| 25 / n/a | 0.10 |" in text
