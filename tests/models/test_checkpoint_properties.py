"""Checkpoint headers at volume: an edited configuration or header is refused with a
:class:`CheckpointError` or loads, never a traceback, and never allocates without bound.

Each case starts from a small real checkpoint and changes one key of its JSON configuration (wrong
types, sizes such as ``residual_channels = 100000``, NaN, removed or added keys, deep nesting) or of
its header. Two writers: one who edits the file and leaves its identity digest as it was (refused as
altered, whatever the edit), and one who also recomputes the digest, as anyone who can write the
file can (the digest is no key): then the configuration itself must be checked. Loading runs with
the address space capped at 2 GiB above what the process holds, so an unbounded size fails as an
allocation error (a defect) instead of exhausting the machine.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from address_space import capped_address_space
from factories import make_model
from hypothesis import assume, example, given
from hypothesis import strategies as st
from neuroauth.models.checkpoint import _digest, load_checkpoint, save_checkpoint
from properties import examples

from neuroauth.errors import CheckpointError


def load_capped(path: Path):
    with capped_address_space():
        return load_checkpoint(path)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> dict:
    """The plain containers of a small checkpoint, as torch.load gives them."""
    path = tmp_path_factory.mktemp("checkpoint-properties") / "small.pt"
    save_checkpoint(make_model(), path)
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoint-properties-out") / "edited.pt"


# -- JSON values, and one change to a configuration

DEEP = "\x00deep\x00"  # stands for a deeply nested value, written into the JSON text directly
sizes = st.sampled_from([0, 1, -1, 2, 3, 7, 100_000, 2**31, 2**63, 10**30])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | sizes
    | st.floats()  # NaN and infinities too: json writes and reads them
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


def paths_of(tree: object, prefix: tuple = ()) -> Iterator[tuple]:
    if prefix:
        yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from paths_of(value, (*prefix, i))


@st.composite
def changes(draw, config: dict) -> tuple[str, tuple, object]:
    """("set", path, value), ("remove", path, None) or ("add", path of a new key, value)."""
    paths = sorted(paths_of(config), key=str)
    kind = draw(st.sampled_from(["set", "set", "set", "remove", "add"]))
    if kind == "add":
        tables = [()] + [p for p in paths if isinstance(lookup(config, p), dict)]
        return (
            kind,
            (*draw(st.sampled_from(tables)), draw(st.text(min_size=1, max_size=12))),
            draw(json_values),
        )
    path = draw(st.sampled_from(paths))
    if kind == "remove":
        return kind, path, None
    like = lookup(config, path)
    near = sizes if isinstance(like, int) and not isinstance(like, bool) else json_values
    return kind, path, draw(near | json_values | st.builds(lambda n: (DEEP, n), st.integers(10, 400)))


def lookup(tree: object, path: tuple) -> object:
    for part in path:
        tree = tree[part]  # type: ignore[index]
    return tree


def apply(config: dict, change: tuple[str, tuple, object]) -> dict:
    kind, path, value = change
    config = copy.deepcopy(config)
    parent = lookup(config, path[:-1])
    if kind == "remove":
        del parent[path[-1]]  # type: ignore[union-attr]
    elif isinstance(parent, list) and not isinstance(path[-1], int):
        raise AssertionError(f"no key {path[-1]!r} in a list")
    else:
        parent[path[-1]] = value  # type: ignore[index]
    return config


def to_json(config: dict) -> str:
    """The configuration's JSON text, a deeply nested value written out where it stands."""
    depth = 0

    def placeholder(value: object) -> object:
        nonlocal depth
        if isinstance(value, tuple) and value and value[0] == DEEP:
            depth = value[1]
            return DEEP
        if isinstance(value, dict):
            return {k: placeholder(v) for k, v in value.items()}
        if isinstance(value, list):
            return [placeholder(v) for v in value]
        return value

    text = json.dumps(placeholder(config), sort_keys=True)
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)


def write(out: Path, payload: dict) -> Path:
    torch.save(payload, out)
    return out


# -- the properties


def test_the_small_checkpoint_loads_under_the_cap(original, out):
    model = load_capped(write(out, original))
    assert model.identity() == original["identity"]


@examples(150)
@given(data=st.data())
@example(data=None)  # the configuration as it is: it loads
def test_an_edited_configuration_with_its_old_identity_is_refused_as_altered(original, out, data):
    config = json.loads(original["config"])
    change = ("set", ("meta",), config["meta"]) if data is None else data.draw(changes(config))
    text = to_json(apply(config, change))
    path = write(out, dict(original, config=text))
    if json.loads(text) == config:
        assert load_capped(path).identity() == original["identity"]
        return
    with pytest.raises(CheckpointError, match="altered after it was written"):
        load_capped(path)


def resigned(original: dict, config: dict) -> dict:
    """``original`` with ``config`` and an identity computed for it, as whoever edits the file can."""
    tensors = original["tensors"]
    return dict(original, config=to_json(config), identity=_digest(json.loads(to_json(config)), tensors))


@pytest.mark.slow
@examples(200)
@given(data=st.data())
@example(data=("set", ("denoiser", "residual_channels"), 100_000))
@example(data=("set", ("denoiser", "skip_channels"), 2**31))
@example(data=("set", ("embedder", "config", "pca_dim"), 10**9))
@example(data=("set", ("embedder", "config", "n_channels"), 100_000))
@example(data=("set", ("denoiser", "dilations"), [10**9]))
@example(data=("set", ("signal", "scale_uv"), 2.0393419162745455e-253))
def test_an_edited_configuration_with_a_matching_identity_is_refused_or_loads(original, out, data):
    """The digest is recomputed: whatever the configuration says is built, or refused first."""
    config = json.loads(original["config"])
    change = data if isinstance(data, tuple) else data.draw(changes(config))
    edited = apply(config, change)
    path = write(out, resigned(original, edited))
    try:
        model = load_capped(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
    else:
        assert model.identity() == _digest(json.loads(to_json(edited)), original["tensors"])
        with capped_address_space():
            serves_a_stream(model)


def serves_a_stream(model) -> None:
    """What the daemon does with a checkpoint it loaded: an engine, a stream of the montage at 250 Hz,
    6 s of samples; refused with a NeuroAuthError, or windows out."""
    from neuroauth.models.streaming import EngineConfig, StreamingEngine

    from neuroauth.errors import NeuroAuthError

    try:
        engine = StreamingEngine(model, EngineConfig(rate_tolerance=None))
        engine.add_stream("s", list(model.montage), 250.0)
    except NeuroAuthError:
        return
    volts = np.random.default_rng(0).normal(0.0, 20e-6, (len(model.montage), 1500))
    engine.push("s", volts, 1000.0 + np.arange(1500) / 250.0)
    for window in engine.advance().windows:
        assert window.problems if window.embedding is None else np.isfinite(window.embedding).all()


headers = st.sampled_from(["format", "format_version", "identity", "config", "tensors", "extra"])
header_values = json_values | st.builds(lambda: torch.zeros(2)) | st.builds(lambda: {"x": torch.zeros(1)})


@examples(150)
@given(key=headers, value=header_values, remove=st.booleans())
def test_an_edited_header_is_refused(original, out, key, value, remove):
    payload = dict(original)
    if remove:
        payload.pop(key, None)
    else:
        payload[key] = value
    unchanged = key == "extra" and remove
    assume(not (key == "format_version" and isinstance(value, torch.Tensor) and value.numel() > 1))
    path = write(out, payload)
    one = isinstance(value, int | float) and value == 1  # True == 1.0 == 1
    if unchanged or (key == "format_version" and not remove and one):
        assert load_capped(path).identity() == original["identity"]
        return
    if key == "extra" and not remove:
        assert load_capped(path).identity() == original["identity"]  # an unknown entry is not read
        return
    with pytest.raises(CheckpointError):
        load_capped(path)


# -- what the properties found in models/checkpoint.py, now refused


def test_a_format_version_that_is_a_tensor_is_refused(original, out):
    with pytest.raises(CheckpointError):
        load_capped(write(out, dict(original, format_version=torch.zeros(2))))


def test_a_deeply_nested_configuration_is_refused(original, out):
    text = original["config"][:-1] + ', "z": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(CheckpointError):
        load_capped(write(out, dict(original, config=text)))


@pytest.mark.parametrize(
    "montage", [pytest.param(None, id="montage-removed"), pytest.param(4, id="montage-a-number")]
)
def test_a_configuration_without_a_montage_is_refused(original, out, montage):
    config = json.loads(original["config"])
    if montage is None:
        del config["montage"]
    else:
        config["montage"] = montage
    with pytest.raises(CheckpointError):
        load_capped(write(out, resigned(original, config)))


@pytest.mark.parametrize(
    "montage",
    [
        pytest.param(["T7", ["F8"], "Cz", "P4"], id="a-name-that-is-a-list"),
        pytest.param(["T7", "F8", "Cz"], id="three-names-for-four-channels"),
    ],
)
def test_a_montage_the_engine_cannot_serve_is_refused_at_load(original, out, montage):
    config = json.loads(original["config"])
    config["montage"] = montage
    with pytest.raises(CheckpointError):
        load_capped(write(out, resigned(original, config)))
