"""Template files at volume, through the store: :meth:`TemplateStore.load` refuses anything but a
template this installation signed with a :class:`TemplateError`, or returns a template that scores.

The files are generated: random bytes; a saved template truncated anywhere; its document's fields
changed; its content changed (wrong types, extreme floats, arrays of other shapes, dtypes or
values) and its digest recomputed, as whoever can write the file can, but not its keyed HMAC; the
same content signed again with the installation key, as a faulty writer on this machine could
(then every value must be checked); and consistent templates signed with another key (forged).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from factories import make_template
from hypothesis import example, given
from hypothesis import strategies as st
from neuroauth.enroll.store import TemplateStore
from neuroauth.enroll.template import Template
from neuroauth.enroll.template_key import default_key_file, load_key, sign
from properties import examples

from neuroauth.errors import TemplateError


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TemplateStore:
    """A store holding a valid template of alice (its key created by the first save)."""
    store = TemplateStore(tmp_path_factory.mktemp("template-properties") / "templates")
    store.save(make_template("alice", identity="ckpt-a"))
    return store


@pytest.fixture(scope="module")
def saved(store) -> bytes:
    """The bytes of alice's template as the store wrote them."""
    return make_template("alice", identity="ckpt-a").to_bytes(installation_key(store))


def put(store: TemplateStore, data: bytes) -> Path:
    """Write ``data`` as alice's template file, private as the store keeps it."""
    path = store.path("alice")
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def assert_usable(template: Template) -> None:
    """A template that loads scores any window to finite numbers and finite evidence."""
    probes = np.random.default_rng(0).standard_normal((16, template.dim))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    scores = template.score(np.concatenate([probes, template.centroids, -template.centroids]))
    assert np.isfinite(scores.fused).all(), scores.fused
    assert np.isfinite(template.decision.llr(scores.fused)).all()
    assert np.isfinite(template.decision.llr(np.array([-1e300, 0.0, 1e300]))).all()


def load(store: TemplateStore) -> Template | None:
    """The template, or None when refused with a TemplateError naming the file."""
    try:
        template = store.load("alice", expected_identity="ckpt-a")
    except TemplateError as exc:
        assert str(store.path("alice")) in str(exc)
        return None
    assert_usable(template)
    return template


# -- whole files


@examples(100)
@given(data=st.binary(max_size=4096))
@example(data=b"")
@example(data=b"\xff\xfe")
@example(data=b"[" * 100_000)
@example(data=b'{"format": "neuroauth-template", "content": ' + b"[" * 100_000 + b"}")
def test_random_bytes_are_refused(store, data):
    put(store, data)
    assert load(store) is None


@examples(100)
@given(cut=st.integers(0, 10**9))
def test_a_truncated_template_is_refused(store, saved, cut):
    put(store, saved[: cut % len(saved)])
    assert load(store) is None


def test_the_saved_template_loads(store, saved):
    put(store, saved)
    assert load(store) is not None


# -- values for fields

extreme_floats = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -5e-324, 0.0, -0.0, 1e-300, 1e4, 1.0001e4, 1e-8]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, 1, 2**63, 10**30])
    | st.floats()
    | extreme_floats
    | st.text(max_size=20)
    | st.builds(lambda n: "x" * n, st.integers(1000, 100_000))
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def encoded_arrays(draw) -> dict:
    """An array field as the format writes it, of any shape, dtype, byte count and values."""
    shape = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
    values = draw(
        st.lists(st.floats() | extreme_floats, min_size=0, max_size=40).map(
            lambda v: np.array(v, dtype="<f8").tobytes()
        )
    )
    return {
        "dtype": draw(st.sampled_from(["<f8", "<f8", "<f4", ">f8", "float64", 8])),
        "shape": draw(st.just(shape) | json_values),
        "base64": draw(st.just(base64.b64encode(values).decode()) | st.text(max_size=12)),
    }


def paths_of(tree: object, prefix: tuple = ()) -> Iterator[tuple]:
    if prefix:
        yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from paths_of(value, (*prefix, i))


def lookup(tree: object, path: tuple) -> object:
    for part in path:
        tree = tree[part]  # type: ignore[index]
    return tree


@st.composite
def content_changes(draw, content: dict) -> tuple[str, tuple, object]:
    """One change to a template's content: ("set", path, value), ("remove", path, None) or ("add", ...)."""
    paths = sorted(paths_of(content), key=str)
    kind = draw(st.sampled_from(["set", "set", "set", "set", "remove", "add"]))
    if kind == "add":
        tables = [()] + [p for p in paths if isinstance(lookup(content, p), dict)]
        return (
            kind,
            (*draw(st.sampled_from(tables)), draw(st.text(min_size=1, max_size=10))),
            draw(json_values),
        )
    path = draw(st.sampled_from(paths))
    if kind == "remove":
        return kind, path, None
    near = {float: extreme_floats | st.floats(), int: st.sampled_from([0, -1, 2**63, 10**9]) | st.integers()}
    old = lookup(content, path)
    value = draw(
        (encoded_arrays() if path[0] == "arrays" and len(path) == 2 else near.get(type(old), json_values))
        | json_values
    )
    return kind, path, value


def changed(content: dict, change: tuple[str, tuple, object]) -> dict:
    kind, path, value = change
    content = copy.deepcopy(content)
    parent = lookup(content, path[:-1])
    if kind == "remove":
        del parent[path[-1]]  # type: ignore[union-attr]
    else:
        parent[path[-1]] = value  # type: ignore[index]
    return content


def document(saved: bytes) -> dict:
    return json.loads(saved)


def written(doc: dict, content: dict, key: bytes | None) -> bytes:
    """``doc`` holding ``content``, with a matching digest, and signed with ``key`` if given."""
    text = json.dumps(content, sort_keys=True)
    doc = dict(doc, content=text, sha256=hashlib.sha256(text.encode()).hexdigest())
    if key is not None:
        doc["hmac_sha256"] = sign(key, text)
    return (json.dumps(doc) + "\n").encode()


# -- changed documents


@examples(100)
@given(
    field=st.sampled_from(["format", "format_version", "sha256", "hmac_sha256", "content", "x"]),
    value=json_values,
)
@example(field="hmac_sha256", value="\x80")  # found: TypeError from hmac.compare_digest
def test_a_changed_document_field_is_refused(store, saved, field, value):
    doc = document(saved)
    assume_changed = doc.get(field) != value
    doc[field] = value
    put(store, (json.dumps(doc) + "\n").encode())
    template = load(store)
    if field == "x" or not assume_changed:
        assert template is not None  # an unknown field outside the content is not read
    else:
        assert template is None


@examples(150)
@given(data=st.data())
def test_changed_content_with_its_digest_but_not_its_signature_is_refused(store, saved, data):
    """Whoever can write the file can recompute the SHA-256, not the keyed HMAC."""
    doc = document(saved)
    content = json.loads(doc["content"])
    edited = changed(content, data.draw(content_changes(content)))
    put(store, written(doc, edited, key=None))
    template = load(store)
    assert template is None or edited == content


@examples(300)
@given(data=st.data())
@example(data=("set", ("fusion", "svm_std"), 1e-300))
@example(data=("set", ("decision", "owner_std"), 5e-324))
@example(data=("set", ("arrays", "centroids"), {"dtype": "<f8", "shape": [1, 8], "base64": "AAAA"}))
def test_changed_content_signed_with_the_installation_key_is_refused_or_scores(store, saved, data):
    """A writer with the key (a faulty one on this machine): every value is checked on load."""
    doc = document(saved)
    content = json.loads(doc["content"])
    change = data if isinstance(data, tuple) else data.draw(content_changes(content))
    edited = changed(content, change)
    put(store, written(doc, edited, key=installation_key(store)))
    load(store)


def test_a_fusion_deviation_below_what_enrollment_writes_is_refused(store, saved):
    doc = document(saved)
    content = json.loads(doc["content"])
    content["fusion"]["svm_std"] = 5e-324
    put(store, written(doc, content, key=installation_key(store)))
    with pytest.raises(TemplateError, match="deviations of at least 1e-06"):
        store.load("alice", expected_identity="ckpt-a")


@examples(25)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(4, 32), key=st.binary(min_size=32, max_size=32))
def test_a_consistent_template_signed_with_another_key_is_refused(store, seed, dim, key):
    """A forger who can write the directory but not read the key: a well-formed template, its digest
    right, signed under a key of their own, is refused as not signed with this installation's key."""
    forged = make_template("alice", identity="ckpt-a", dim=dim, seed=seed).to_bytes(key)
    put(store, forged)
    with pytest.raises(TemplateError, match="not signed with this installation's key"):
        store.load("alice", expected_identity="ckpt-a")
    put(
        store, make_template("alice", identity="ckpt-a", dim=dim, seed=seed).to_bytes(installation_key(store))
    )
    assert load(store) is not None  # the same template signed with the installation key loads


def installation_key(store: TemplateStore) -> bytes:
    return load_key(default_key_file(store.directory))


def test_the_saved_template_does_not_hold_the_key(store, saved):
    assert installation_key(store).hex() not in saved.decode()


def test_a_template_path_that_is_a_directory_is_refused(tmp_path):
    store = TemplateStore(tmp_path / "templates")
    store.save(make_template("alice"))
    store.path("alice").unlink()
    store.path("alice").mkdir(mode=0o700)
    with pytest.raises(TemplateError, match="not a plain file"):
        store.load("alice")
