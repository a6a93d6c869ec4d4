from __future__ import annotations

import io
import json
import pickle
import pickletools
import zipfile

import numpy as np
import pytest
import torch
from neuroauth.models.checkpoint import load_checkpoint, save_checkpoint

from neuroauth.errors import CheckpointError


def test_round_trip_rebuilds_identical_models(tiny_checkpoint, tmp_path):
    model = load_checkpoint(tiny_checkpoint)
    again = tmp_path / "again.pt"
    assert save_checkpoint(model, again) == model.identity()
    reloaded = load_checkpoint(again)
    x = torch.randn(2, 4, 800)
    with torch.no_grad():
        assert torch.equal(model.denoiser(x), reloaded.denoiser(x))
        assert torch.equal(model.embedder(x), reloaded.embedder(x))
    assert reloaded.montage == model.montage
    assert reloaded.spec == model.spec
    assert reloaded.meta["training_subjects"] == model.meta["training_subjects"]


def test_the_cohort_travels_with_the_checkpoint(tiny_checkpoint, tmp_path, bundled_4ch):
    """`neuroauth train` embeds its people's windows, 4 s apart; the file keeps them (float16), and
    the calibration sequences beside them."""
    model = load_checkpoint(tiny_checkpoint)
    cohort = model.cohort
    assert cohort is not None and cohort.subjects == tuple(d.subject for d in bundled_4ch)
    assert cohort.dim == model.embedder.dim
    n_windows = sum(len(seq) for _, _, seq in cohort.sequences())
    assert n_windows == len(cohort.embeddings) > 5 * 200 / 4 and cohort.hop_seconds == 4.0
    assert np.allclose(np.linalg.norm(cohort.embeddings, axis=1), 1.0, atol=2e-3)
    reloaded = load_checkpoint(tmp_path / "c.pt") if save_checkpoint(model, tmp_path / "c.pt") else None
    assert np.array_equal(reloaded.cohort.embeddings, cohort.embeddings)
    assert (reloaded.cohort.recording == cohort.recording).all()
    assert reloaded.cohort.without({cohort.subjects[0]}).subjects == cohort.subjects
    assert len(reloaded.cohort.without({cohort.subjects[0]}).embeddings) < len(cohort.embeddings)
    sequences = reloaded.calibration
    assert sequences is not None and sequences.record == model.calibration.record
    assert len(sequences.owner_sequences()) == sequences.record["owner_sequences"] > 0
    assert len(sequences.impostor_sequences()) == sequences.record["impostor_sequences"] > 0
    np.testing.assert_array_equal(sequences.values, model.calibration.values)


def test_a_cohort_of_another_dimension_is_refused(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["tensors"]["cohort.embeddings"] = payload["tensors"]["cohort.embeddings"][:, :3]
    bad = tmp_path / "cohort.pt"
    torch.save(resigned(payload), bad)
    with pytest.raises(CheckpointError, match=r"cohort\.pt.*cohort of dimension 3"):
        load_checkpoint(bad)


class Exploit:
    def __reduce__(self):
        return (print, ("code from a checkpoint ran",))


def test_a_pickled_object_is_refused_without_running_it(tiny_checkpoint, tmp_path, capsys):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["extra"] = Exploit()
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*pickled objects"):
        load_checkpoint(bad)
    assert "code from a checkpoint ran" not in capsys.readouterr().out


def test_a_plain_pickle_file_is_refused(tmp_path):
    bad = tmp_path / "plain.pt"
    bad.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match=r"plain\.pt"):
        load_checkpoint(bad)


def test_a_truncated_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*damaged or truncated"):
        load_checkpoint(cut)


def resigned(payload: dict) -> dict:
    """``payload`` with its identity recomputed, as whoever edits a file can (the digest is no key)."""
    from neuroauth.models.checkpoint import _digest

    return dict(payload, identity=_digest(json.loads(payload["config"]), payload["tensors"]))


def test_wrong_shapes_and_altered_weights_are_refused(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    shaped = dict(payload, tensors=dict(payload["tensors"]))
    shaped["tensors"]["denoiser.inp.weight"] = torch.zeros(3, 3, 3)
    shaped = resigned(shaped)
    path = tmp_path / "shape.pt"
    torch.save(shaped, path)
    with pytest.raises(CheckpointError, match=r"wrong shape: denoiser\.inp\.weight"):
        load_checkpoint(path)
    altered = dict(payload, tensors=dict(payload["tensors"]))
    altered["tensors"]["embedder.projection"] = altered["tensors"]["embedder.projection"] * 2
    path = tmp_path / "altered.pt"
    torch.save(altered, path)
    with pytest.raises(CheckpointError, match="altered after it was written"):
        load_checkpoint(path)


def test_an_edited_configuration_is_refused_before_anything_is_built_from_it(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    config = json.loads(payload["config"])
    config["denoiser"]["residual_channels"] = 100_000  # would allocate hundreds of GB if built
    path = tmp_path / "edited.pt"
    torch.save(dict(payload, config=json.dumps(config)), path)
    with pytest.raises(CheckpointError, match="altered after it was written"):
        load_checkpoint(path)


def test_another_format_version_is_refused(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["format_version"] = 99
    path = tmp_path / "v99.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(CheckpointError, match="neuroauth train"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_checkpoint_is_a_zip_of_plain_data(tiny_checkpoint):
    with zipfile.ZipFile(tiny_checkpoint) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        body = zf.read(pkl)
    # the only classes the pickle names are torch's tensor rebuilding and OrderedDict
    globals_named = {arg for op, arg, _ in pickletools.genops(body) if op.name == "GLOBAL"}
    assert globals_named
    assert all(g.startswith(("torch ", "torch._utils ", "collections OrderedDict")) for g in globals_named), (
        globals_named
    )
    config = json.loads(torch.load(io.BytesIO(tiny_checkpoint.read_bytes()), weights_only=True)["config"])
    assert config["embedder"]["name"] == "spectral"
    assert config["montage"] == ["T7", "F8", "Cz", "P4"]


def test_a_checkpoint_without_its_identity_or_with_non_tensor_entries_is_refused(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    stripped = {k: v for k, v in payload.items() if k != "identity"}
    path = tmp_path / "no-identity.pt"
    torch.save(stripped, path)
    with pytest.raises(CheckpointError, match="no identity digest"):
        load_checkpoint(path)
    listed = dict(payload, tensors=[1, 2])
    path = tmp_path / "listed.pt"
    torch.save(listed, path)
    with pytest.raises(CheckpointError, match=r"listed\.pt.*malformed"):
        load_checkpoint(path)


def test_a_link_a_fifo_and_an_oversized_file_are_refused_before_reading(tiny_checkpoint, tmp_path):
    import os

    from neuroauth.models import checkpoint

    link = tmp_path / "current.pt"
    link.symlink_to(tiny_checkpoint)
    with pytest.raises(CheckpointError, match=r"current\.pt is a symbolic link; give the file's own path"):
        load_checkpoint(link)
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer for ever
    with pytest.raises(CheckpointError, match=r"fifo\.pt is not a plain file"):
        load_checkpoint(fifo)
    huge = tmp_path / "huge.pt"
    with huge.open("wb") as handle:
        handle.truncate(checkpoint.MAX_CHECKPOINT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(CheckpointError, match=r"huge\.pt holds 536870913 bytes, more than any checkpoint"):
        load_checkpoint(huge)
    assert load_checkpoint(tiny_checkpoint).identity()  # the file itself loads
