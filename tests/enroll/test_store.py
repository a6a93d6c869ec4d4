from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import pickle
import stat

import numpy as np
import pytest
from neuroauth.enroll import store as store_module
from neuroauth.enroll.store import TemplateStore, default_templates_dir
from neuroauth.enroll.template import Template
from neuroauth.enroll.template_key import default_key_file, load_key, sign

from neuroauth.atomic import atomic_write
from neuroauth.errors import TemplateError


def assert_same(a: Template, b: Template) -> None:
    for name in ("user", "checkpoint_identity", "embedder", "dim", "created", "n_windows", "calibration"):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.states == b.states
    np.testing.assert_array_equal(a.svm.support_vectors, b.svm.support_vectors)
    np.testing.assert_array_equal(a.svm.dual_coef, b.svm.dual_coef)
    assert (a.svm.intercept, a.svm.gamma, a.svm.nu) == (b.svm.intercept, b.svm.gamma, b.svm.nu)
    assert a.fusion == b.fusion
    assert a.threshold == b.threshold
    assert a.decision == b.decision


def rewrite(path, edit) -> None:
    """Edit a template's content and sign it again with the installation key, as a buggy writer (not
    an attacker, who cannot read the key) might."""
    document = json.loads(path.read_text())
    content = json.loads(document["content"])
    edit(content)
    document["content"] = json.dumps(content)
    document["sha256"] = hashlib.sha256(document["content"].encode()).hexdigest()
    document["hmac_sha256"] = sign(load_key(default_key_file(path.parent)), document["content"])
    path.write_text(json.dumps(document))


def test_round_trip_keeps_every_field(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    original = make_template()
    path = store.save(original)
    loaded = store.load("alice", expected_identity="ckpt-a")
    assert_same(original, loaded)
    probes = np.random.default_rng(5).normal(size=(20, 8))
    np.testing.assert_array_equal(loaded.score(probes).fused, original.score(probes).fused)
    assert path == tmp_path / "templates" / "alice.template.json"


def test_file_is_private_and_not_pickle(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    path = store.save(make_template())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    document = json.loads(path.read_text())
    assert document["format"] == "neuroauth-template" and document["format_version"] == 4
    assert store.key_file == tmp_path / "template.key"  # beside the directory, not in it
    assert stat.S_IMODE(store.key_file.stat().st_mode) == 0o600


# The installation key ------------------------------------------------------------------------


def forge(path, key: bytes, edit) -> None:
    """What someone who can write the templates but not read the key could do: edit the content and
    make every digest match, signing with a key of their own."""
    document = json.loads(path.read_text())
    content = json.loads(document["content"])
    edit(content)
    document["content"] = json.dumps(content)
    document["sha256"] = hashlib.sha256(document["content"].encode()).hexdigest()
    document["hmac_sha256"] = sign(key, document["content"])
    path.write_text(json.dumps(document))


def test_a_template_forged_without_the_key_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    path = store.save(make_template())
    forge(path, os.urandom(32), lambda c: c["threshold"].update(value=-50.0))  # accept anyone
    with pytest.raises(TemplateError, match=r"alice\.template\.json is not signed with this installation"):
        store.load("alice")
    # the same edit signed with the installation key loads: the key, not the edit, was refused
    forge(path, load_key(store.key_file), lambda c: c["threshold"].update(value=-50.0))
    assert store.load("alice").threshold.value == -50.0


def test_a_template_from_another_installation_is_refused(tmp_path, make_template):
    here, there = TemplateStore(tmp_path / "a" / "templates"), TemplateStore(tmp_path / "b" / "templates")
    here.save(make_template(user="bob"))
    there.save(make_template())
    (here.directory / "alice.template.json").write_bytes(there.path("alice").read_bytes())
    os.chmod(here.directory / "alice.template.json", 0o600)
    assert here.load("bob").user == "bob"
    with pytest.raises(TemplateError, match="another installation"):
        here.load("alice")


def test_without_the_key_no_template_loads(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    store.save(make_template())
    store.key_file.unlink()
    with pytest.raises(
        TemplateError, match=r"no installation key at .*template\.key.*first `neuroauth enroll`"
    ):
        store.load("alice")
    # saving again creates a new key; the template signed under the old one is not trusted by it
    store.save(make_template(user="bob"))
    with pytest.raises(TemplateError, match="not signed with this installation"):
        store.load("alice")


def test_a_key_readable_by_others_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    store.save(make_template())
    os.chmod(store.key_file, 0o644)
    with pytest.raises(TemplateError, match=r"can be read or written by other accounts.*chmod 600"):
        store.load("alice")


def test_a_damaged_key_is_refused_and_never_replaced(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    store.key_file.write_text("not a key\n")
    os.chmod(store.key_file, 0o600)
    with pytest.raises(TemplateError, match=r"installation key .* is damaged"):
        store.save(make_template())
    assert store.key_file.read_text() == "not a key\n"
    assert not store.path("alice").exists()


def test_a_key_behind_a_symbolic_link_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    store.save(make_template())
    real = store.key_file.rename(tmp_path / "elsewhere.key")
    store.key_file.symlink_to(real)
    with pytest.raises(TemplateError, match="symbolic link"):
        store.load("alice")


def test_the_systemd_credential_is_the_key(tmp_path, make_template, monkeypatch):
    enrolled = TemplateStore(tmp_path / "state" / "templates")
    enrolled.save(make_template())
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "template-key").write_bytes(enrolled.key_file.read_bytes())
    os.chmod(credentials / "template-key", 0o400)
    enrolled.key_file.write_text("00" * 32 + "\n")  # the service must not read this one
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    service = TemplateStore(enrolled.directory)
    assert service.key_file == credentials / "template-key"
    assert service.load("alice").user == "alice"


def test_an_open_directory_is_made_private(tmp_path, make_template):
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    TemplateStore(directory).save(make_template())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_missing_template_says_how_to_enroll(tmp_path):
    with pytest.raises(TemplateError, match=r"bob\.template\.json.*neuroauth enroll --user bob"):
        TemplateStore(tmp_path).load("bob")


def test_tampered_content_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())
    document = json.loads(path.read_text())
    assert '"n_windows": 40' in document["content"]
    document["content"] = document["content"].replace('"n_windows": 40', '"n_windows": 41')
    path.write_text(json.dumps(document))
    with pytest.raises(
        TemplateError,
        match=r"alice\.template\.json.*altered after it was written.*neuroauth enroll --user alice",
    ):
        store.load("alice")


def test_a_flipped_byte_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())
    data = bytearray(path.read_bytes())
    start = data.index(b'\\"base64\\": \\"') + 20  # inside the first encoded array
    data[start] = ord("A") if data[start] != ord("A") else ord("B")
    path.write_bytes(bytes(data))
    with pytest.raises(TemplateError, match=r"alice\.template\.json.*altered"):
        store.load("alice")


def test_truncated_file_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        TemplateError, match=r"alice\.template\.json is damaged or truncated.*neuroauth enroll --user alice"
    ):
        store.load("alice")


class Exploit:
    def __reduce__(self):
        return (print, ("code from a template ran",))


def test_a_pickle_is_refused_without_running_it(tmp_path, capsys):
    (tmp_path / "alice.template.json").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(TemplateError, match=r"alice\.template\.json is damaged"):
        TemplateStore(tmp_path).load("alice")
    assert "code from a template ran" not in capsys.readouterr().out


def test_wrong_array_shapes_are_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())

    def drop_a_column(content):
        spec = content["arrays"]["support_vectors"]
        rows, cols = spec["shape"]
        array = np.frombuffer(base64.b64decode(spec["base64"]), "<f8").reshape(rows, cols)[:, :-1]
        spec["shape"] = [rows, cols - 1]
        spec["base64"] = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()

    rewrite(path, drop_a_column)
    with pytest.raises(
        TemplateError,
        match=r"alice\.template\.json is malformed.*shapes disagree.*neuroauth enroll --user alice",
    ):
        store.load("alice")


def test_shape_and_byte_count_must_agree(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())
    rewrite(path, lambda c: c["arrays"]["centroids"].update(shape=[1, 9]))
    with pytest.raises(TemplateError, match=r"alice\.template\.json is malformed.*centroids.*bytes"):
        store.load("alice")


def test_another_dtype_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())
    rewrite(path, lambda c: c["arrays"]["dual_coef"].update(dtype="|O"))
    with pytest.raises(TemplateError, match=r"alice\.template\.json is malformed.*dtype"):
        store.load("alice")


def test_another_checkpoint_is_refused_naming_both(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    store.save(make_template(identity="ckpt-old"))
    with pytest.raises(
        TemplateError, match=r"alice\.template\.json.*ckpt-old.*ckpt-new.*Enroll again with this checkpoint"
    ):
        store.load("alice", expected_identity="ckpt-new")


def test_another_format_version_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template())
    document = json.loads(path.read_text())
    document["format_version"] = 1  # one centroid: made before templates kept one per state
    path.write_text(json.dumps(document))
    with pytest.raises(TemplateError, match=r"alice\.template\.json has format version 1.*Enroll again"):
        store.load("alice")


def test_a_template_copied_to_another_name_is_refused(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    path = store.save(make_template(user="alice"))
    (tmp_path / "bob.template.json").write_bytes(path.read_bytes())
    with pytest.raises(TemplateError, match=r"bob\.template\.json belongs to user 'alice'"):
        store.load("bob")


def test_a_failed_write_leaves_the_previous_template(tmp_path, make_template, monkeypatch):
    store = TemplateStore(tmp_path)
    store.save(make_template(seed=0))

    def half_then_fail(path, write, mode=None):
        def broken(handle):
            handle.write(b'{"format": "neuroauth-template", ')
            raise OSError("disk full")

        atomic_write(path, broken, mode=mode)

    monkeypatch.setattr(store_module, "atomic_write", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_template(seed=1))
    assert_same(store.load("alice"), make_template(seed=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.template.json"]


def test_a_record_that_is_not_json_is_refused_before_writing(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    store.save(make_template(seed=0))
    bad = make_template(seed=1)
    bad.calibration["oops"] = {1, 2}
    with pytest.raises(TemplateError, match="not plain JSON"):
        store.save(bad)
    assert_same(store.load("alice"), make_template(seed=0))


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "../etc/passwd", "a/b", "x" * 65, "with space", "é", "a\0b"]
)
def test_unsafe_user_names_are_refused(tmp_path, name):
    with pytest.raises(TemplateError, match="is not allowed"):
        TemplateStore(tmp_path).path(name)


@pytest.mark.parametrize("name", ["alice", "bob.smith-2", "A_1", "x" * 64])
def test_safe_user_names_stay_in_the_directory(tmp_path, name):
    path = TemplateStore(tmp_path).path(name)
    assert path.parent == tmp_path and path.name == f"{name}.template.json"


def test_list_flags_damaged_files_and_remove_deletes(tmp_path, make_template):
    store = TemplateStore(tmp_path)
    store.save(make_template(user="alice"))
    store.save(make_template(user="carol", identity="ckpt-b"))
    (tmp_path / "bob.template.json").write_text('{"format": "neuroauth-temp')
    entries = {e.user: e for e in store.list()}
    assert sorted(entries) == ["alice", "bob", "carol"]
    assert entries["bob"].damaged and "damaged or truncated" in entries["bob"].problem
    assert not entries["alice"].damaged and entries["carol"].checkpoint_identity == "ckpt-b"
    assert entries["alice"].n_windows == 40
    store.remove("alice")
    assert not store.path("alice").exists()
    with pytest.raises(TemplateError, match="no template for user 'alice'"):
        store.remove("alice")
    assert TemplateStore(tmp_path / "absent").list() == []


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("NEUROAUTH_TEMPLATES__DIRECTORY", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_templates_dir() == tmp_path / "home" / ".local/share/neuroauth/templates"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    assert default_templates_dir() == tmp_path / "state" / "templates"
    monkeypatch.setenv("NEUROAUTH_TEMPLATES__DIRECTORY", str(tmp_path / "explicit"))
    assert default_templates_dir() == tmp_path / "explicit"


# -- what the store trusts: like ssh's StrictModes ------------------------------------------------


def test_a_directory_or_template_others_can_write_is_refused_with_the_fix(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    path = store.save(make_template())
    path.chmod(0o620)
    with pytest.raises(
        TemplateError, match=r"alice\.template\.json can be written by other accounts .*chmod go-w"
    ):
        store.load("alice")
    path.chmod(0o600)
    store.directory.chmod(0o777)
    with pytest.raises(TemplateError, match=r"template directory .* \(mode 777\).*chmod go-w"):
        store.load("alice")
    store.directory.chmod(0o700)
    assert store.load("alice").user == "alice"


def test_links_fifos_and_huge_files_are_refused_without_reading_them(tmp_path, make_template):
    import os

    from neuroauth.enroll.store import MAX_TEMPLATE_BYTES

    store = TemplateStore(tmp_path / "templates")
    real = store.save(make_template(user="bob"))
    (store.directory / "alice.template.json").symlink_to(real)
    with pytest.raises(TemplateError, match=r"alice\.template\.json is a symbolic link"):
        store.load("alice")
    (store.directory / "alice.template.json").unlink()
    os.mkfifo(store.directory / "alice.template.json", 0o600)  # opening it must not hang
    with pytest.raises(TemplateError, match="is not a plain file"):
        store.load("alice")
    (store.directory / "alice.template.json").unlink()
    huge = store.directory / "alice.template.json"
    with huge.open("wb") as f:
        f.truncate(MAX_TEMPLATE_BYTES + 1)  # sparse: the size is there, the bytes are not read
    huge.chmod(0o600)
    with pytest.raises(
        TemplateError, match=rf"holds {MAX_TEMPLATE_BYTES + 1} bytes, far more than a template"
    ):
        store.load("alice")
    listed = {e.user: e for e in store.list()}
    assert listed["alice"].damaged and not listed["bob"].damaged


# The stream the owner was enrolled from ------------------------------------------------------

HEADSET = {"source_id": "headset-7f3a", "host": "desk-1", "channels": ["T7", "F8", "Cz", "P4"]}


def test_the_enrolled_stream_is_kept_and_another_is_named(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    store.save(dataclasses.replace(make_template(), stream=dict(HEADSET)))
    loaded = store.load("alice")
    assert loaded.stream == HEADSET
    assert loaded.stream_mismatch(dict(HEADSET)) is None
    imitation = dict(HEADSET, source_id="headset-7f3b")
    assert loaded.stream_mismatch(imitation) == (
        "not the stream alice was enrolled from: source_id 'headset-7f3b' (enrolled from "
        "'headset-7f3a'). Another program may be imitating the headset; if the headset itself changed, "
        "enroll again (`neuroauth enroll --user alice`)"
    )
    reordered = dict(HEADSET, host="desk-2", channels=["F8", "T7", "Cz", "P4"])
    problem = loaded.stream_mismatch(reordered)
    assert "host 'desk-2' (enrolled from 'desk-1')" in problem and "channels ['F8', 'T7'" in problem


def test_a_template_enrolled_from_recordings_takes_any_stream(tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    store.save(make_template())
    assert store.load("alice").stream is None
    assert store.load("alice").stream_mismatch(HEADSET) is None


@pytest.mark.parametrize(
    "stream",
    [
        {"source_id": "a", "host": "b"},
        {"source_id": 1, "host": "b", "channels": ["T7"]},
        {"source_id": "a", "host": "b", "channels": []},
        {"source_id": "a", "host": "b", "channels": ["T7", ""]},
        {"source_id": "a", "host": "b", "channels": ["T7"], "uid": "x"},
        ["a", "b"],
    ],
)
def test_a_malformed_stream_record_is_refused(tmp_path, make_template, stream):
    store = TemplateStore(tmp_path / "templates")
    path = store.save(make_template())
    rewrite(path, lambda c: c.update(stream=stream))
    with pytest.raises(TemplateError, match=r"alice\.template\.json is malformed.*stream"):
        store.load("alice")
