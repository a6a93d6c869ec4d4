from __future__ import annotations

import base64

import numpy as np
import pytest
from neuroauth.enroll.store import TemplateStore

from neuroauth.cli import main as run


def test_list_show_remove(tmp_path, make_template, enrolled, capsys):
    store = TemplateStore(tmp_path)
    store.save(enrolled)
    store.save(make_template(user="carol", identity="ckpt-b"))
    (tmp_path / "dave.template.json").write_text("not a template")

    assert run(["templates", "--dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert sorted(lines) == ["alice", "carol", "dave"]
    assert "ckpt-a" in lines["alice"] and " 180" in lines["alice"]
    assert "ckpt-b" in lines["carol"]
    assert "DAMAGED" in lines["dave"] and "dave.template.json" in lines["dave"]

    assert run(["templates", "--dir", str(tmp_path), "show", "alice"]) == 0
    out = capsys.readouterr().out
    assert "ckpt-a" in out and "target-far" in out and "false lock-outs/h" in out
    assert f"nu {enrolled.svm.nu:g}" in out and "targets met        yes" in out
    # metadata only: no biometric array, in any form
    centroid_b64 = base64.b64encode(np.ascontiguousarray(enrolled.centroids, "<f8").tobytes()).decode()
    assert centroid_b64[:24] not in out
    assert f"{enrolled.centroids[0, 0]:.4f}" not in out and repr(float(enrolled.centroids[0, 0])) not in out

    assert run(["templates", "--dir", str(tmp_path), "remove", "carol"]) == 0
    assert "removed the template of carol" in capsys.readouterr().out
    assert not (tmp_path / "carol.template.json").exists()
    assert run(["templates", "--dir", str(tmp_path), "show", "carol"]) == 2
    assert "neuroauth enroll --user carol" in capsys.readouterr().err


def test_default_directory_comes_from_the_environment(tmp_path, make_template, monkeypatch, capsys):
    monkeypatch.setenv("NEUROAUTH_TEMPLATES__DIRECTORY", str(tmp_path / "env"))
    assert run(["templates", "list"]) == 0
    assert f"no templates in {tmp_path / 'env'}" in capsys.readouterr().out
    TemplateStore(tmp_path / "env").save(make_template(user="erin"))
    run(["templates", "list"])
    assert "erin" in capsys.readouterr().out


def test_unsafe_name_is_refused(tmp_path, capsys):
    assert run(["templates", "--dir", str(tmp_path), "remove", "../secrets"]) == 2
    assert "is not allowed" in capsys.readouterr().err


def test_renormalise_fits_the_templates_against_the_people_enrolled_there(tmp_path, capsys):
    from factories import make_model
    from neuroauth.enroll.calibration import OwnerWindows, enroll
    from neuroauth.models.checkpoint import save_checkpoint
    from neuroauth.models.cohort import ScoreSequences
    from synthetic_people import recording

    rng = np.random.default_rng(3)
    model = make_model()
    model.calibration = ScoreSequences.from_lists(  # owners well above impostors, as any calibration has them
        [rng.normal(3.0, 1.0, 60)], [rng.normal(0.0, 1.0, 60)], {"hop_seconds": 1.0}, ["a"], ["a"]
    )
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(model, checkpoint)
    store = TemplateStore(tmp_path / "templates")
    for user in ("ann", "ben", "cat"):
        store.save(
            enroll(
                OwnerWindows.single(recording(rng, rng.standard_normal(8), 60, spread=0.5)),
                model.cohort,
                model.calibration,
                user=user,
                checkpoint_identity=model.identity(),
                embedder=model.embedder_name,
            )
        )
    directory = ["templates", "--dir", str(store.directory)]
    assert run([*directory, "renormalise", "--checkpoint", str(checkpoint), "--min-site-people", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("normalised against site (2 people)") == 3 and "restart neuroauthd" in out
    assert run([*directory, "show", "ben"]) == 0
    assert "normalised against   the 2 other people enrolled here" in capsys.readouterr().out

    assert run([*directory, "renormalise", "--checkpoint", str(checkpoint)]) == 0  # 10 by default
    assert capsys.readouterr().out.count("normalised against training (3 people)") == 3


def test_a_site_size_below_one_is_refused(tmp_path, capsys):
    for bad in ("0", "-3", "ten"):
        with pytest.raises(SystemExit) as exit:
            run(["templates", "--dir", str(tmp_path), "renormalise", "--min-site-people", bad])
        assert exit.value.code == 2
        assert f"takes a whole number of people, at least 1, not {bad!r}" in capsys.readouterr().err
