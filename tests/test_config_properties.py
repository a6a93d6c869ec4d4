"""Configurations at volume: whatever a TOML file or the environment holds, ``neuroauthd`` accepts it
or refuses it with a :class:`ConfigError` naming the key, never with a traceback.

The documents are generated: a complete valid configuration with one key set to a wild value
(wrong types, numbers beyond or on their bounds, NaN, huge, control-character and unicode
strings, dates, deep nesting), a key removed or added; arbitrary tables; arbitrary bytes;
arbitrary ``NEUROAUTH_*`` variables. What is accepted must be usable at run time: names free of
control characters and of sane length, a broker host the socket layer can encode, timeouts finite.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import ipaddress
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import make_model, make_template
from hypothesis import example, given
from hypothesis import strategies as st
from neuroauth.daemon.main import validate_main
from neuroauth.enroll.store import TemplateStore
from neuroauth.models.checkpoint import save_checkpoint
from properties import examples

from neuroauth.config import MAX_NAME_LENGTH, ConfigError, Settings, load_settings

# -- TOML written from Python values (tomllib reads, it does not write)


def toml_string(value: str) -> str:
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(document: dict) -> str:
    """One ``key = value`` line per top-level key, tables inline: any tree TOML can hold."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items())


# -- values a person or a program could write

TEXT = st.characters(exclude_categories=("Cs",))  # TOML cannot hold lone surrogates
CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.just("\x7f")

huge_strings = st.builds(lambda c, n: c * n, TEXT, st.integers(MAX_NAME_LENGTH - 2, 100_000))
tricky_strings = st.sampled_from(
    [
        "",
        " ",
        "~",
        "~nosuchuser/x",
        "..",
        "../etc/passwd",
        "a/b",
        "a//b",
        "/",
        "$SYS",
        "#",
        "+",
        "home/+/x",
        "a..b",
        "xn--é",
        "é" * 70,
        "::1",
        "[::1]",
        "127.0.0.1",
        "256.1.1.1",
        "localhost.",
        "DEBUG",
        "debug",
        "true",
        "1e999",
        "\u202e",  # right-to-left override
        "\ufeff",
        "\U0001f9e0",
    ]
)
strings = (
    st.text(TEXT, max_size=30)
    | st.builds(lambda a, c, b: a + c + b, st.text(max_size=5), CONTROL, st.text(max_size=5))
    | huge_strings
    | tricky_strings
)
BOUNDS = (0, 1, -1, 4, 5, 65535, 65536, 2**63, -(2**63), 10**30, 0.0, -0.0, 0.05, 0.0999, 0.1, 0.5)
BOUNDS_S = (9.999, 10.0, 10.001, 599.9, 600.0, 600.1, 3600.0, 3600.5, 1e-300, 5e-324, 1e300)
bounds = st.sampled_from((*BOUNDS, *BOUNDS_S))
numbers = st.integers() | st.floats() | bounds
scalars = (
    st.booleans()
    | numbers
    | strings
    | st.dates()
    | st.times()
    | st.datetimes(timezones=st.none() | st.just(datetime.UTC))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(TEXT, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def nested(depth: int, leaf: object, table: bool) -> object:
    for _ in range(depth):
        leaf = {"k": leaf} if table else [leaf]
    return leaf


deep_values = st.builds(nested, st.integers(20, 400), scalars, st.booleans())
wild_values = values | deep_values

# -- a complete, valid configuration, and one change to it


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Files a configuration names: a real (small) checkpoint, a template for each owner, a
    password and a CA file; and the path the generated configuration is written to."""
    root = tmp_path_factory.mktemp("config-properties")
    model = make_model()
    checkpoint = root / "model.pt"
    identity = save_checkpoint(model, checkpoint)
    templates = root / "templates"
    store = TemplateStore(templates)
    for user in ("alice", "bob"):
        store.save(make_template(user=user, identity=identity, dim=model.embedder.dim))
    password = root / "mqtt.password"
    password.write_text("s3cret\n")
    ca = root / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    return {"checkpoint": checkpoint, "templates": templates, "password": password, "ca": ca, "root": root}


@pytest.fixture(scope="module", autouse=True)
def clean_environment(tmp_path_factory) -> Iterator[None]:
    """No NEUROAUTH_* or systemd variable of the machine leaks into these tests."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.upper().startswith("NEUROAUTH_") or name == "STATE_DIRECTORY":
                mp.delenv(name)
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        yield


def base_config(files: dict[str, Path]) -> dict:
    return {
        "log_level": "info",
        "lsl": {"loopback_only": True},
        "model": {
            "checkpoint": str(files["checkpoint"]),
            "hop_seconds": 0.5,
            "max_backlog_seconds": 4.0,
            "check_rate": True,
        },
        "templates": {"directory": str(files["templates"]), "key_file": str(files["root"] / "template.key")},
        "decision": {"false_lockouts_per_hour": 0.5, "time_to_lock_s": 8.0, "no_signal_after_s": 2.0},
        "mqtt": {
            "host": "broker.example.org",
            "port": 8883,
            "prefix": "home/neuroauth",
            "client_id": "neuroauthd-desk",
            "username": "neuroauthd",
            "password_file": str(files["password"]),
            "keepalive": 30,
            "state_heartbeat_s": 30.0,
            "publish_scores": False,
            "reconnect_min_s": 0.5,
            "reconnect_max_s": 30.0,
            "allow_plaintext_password": False,
            "tls": {"enabled": True, "ca_file": str(files["ca"]), "insecure": False},
            "discovery": {"enabled": True, "prefix": "homeassistant"},
        },
        "headsets": [
            {
                "device": "desk",
                "user": "alice",
                "stream": {"name": "Muse-1234", "type": "EEG", "host": "desk-pc"},
                "resolve_timeout_s": 3.0,
            },
            {"device": "door-left", "user": "bob", "stream": {"source_id": "openbci-5678"}},
        ],
    }


def paths_of(tree: object, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of ``tree``: tables, lists and leaves."""
    if prefix:
        yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from paths_of(value, (*prefix, i))


BASE = base_config(dict.fromkeys(("checkpoint", "templates", "password", "ca", "root"), Path("x")))
BASE_PATHS = sorted(paths_of(BASE), key=str)
TABLE_PATHS = [()] + [
    p
    for p in BASE_PATHS
    if p[-1] in ("lsl", "model", "templates", "decision", "mqtt", "tls", "discovery", "stream")
    or isinstance(p[-1], int)
]


@st.composite
def changes(draw) -> tuple[str, tuple, object]:
    """One change to the base configuration: ("set", path, value), ("remove", path, None) or
    ("add", path of a new key, value)."""
    kind = draw(st.sampled_from(["set", "set", "set", "remove", "add"]))
    if kind == "add":
        table = draw(st.sampled_from(TABLE_PATHS))
        return kind, (*table, draw(st.text(TEXT, min_size=1, max_size=20))), draw(wild_values)
    path = draw(st.sampled_from(BASE_PATHS))
    if kind == "remove":
        return kind, path, None
    return kind, path, draw(values_like(lookup(BASE, path)) | wild_values)


def values_like(value: object) -> st.SearchStrategy:
    """Values near the kind of ``value``: most bugs hide in a string where a string is expected."""
    if isinstance(value, str):
        return strings
    if isinstance(value, bool):
        return st.booleans() | st.sampled_from([0, 1, "true", "yes"])
    if isinstance(value, int | float):
        return numbers
    return wild_values


def lookup(tree: object, path: tuple) -> object:
    for part in path:
        tree = tree[part]  # type: ignore[index]
    return tree


def apply(config: dict, change: tuple[str, tuple, object]) -> dict:
    kind, path, value = change
    config = copy.deepcopy(config)
    parent = config
    for part in path[:-1]:
        parent = parent[part]
    if kind == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return config


def write(files: dict[str, Path], text: str | bytes) -> Path:
    path = files["root"] / "neuroauthd.toml"
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


# -- what a refusal and an acceptance must look like


def key_of(line: str) -> str:
    return line.split(": ", 1)[0]


def locates(node: object, key: str) -> bool:
    """Whether ``key`` (parts joined by dots, which keys may hold too; a key with a control character
    quoted) leads through ``node`` to a value or to a key missing from a table that exists."""
    if isinstance(node, list):
        index, _, rest = key.partition(".")
        return index.isdigit() and int(index) < len(node) and (not rest or locates(node[int(index)], rest))
    if not isinstance(node, dict):
        return False
    if "." not in key or any(key in (k, repr(k)) for k in node):
        return True
    return any(
        key.startswith(shown + ".") and locates(v, key[len(shown) + 1 :])
        for k, v in node.items()
        for shown in (k, repr(k))
    )


def assert_printable(line: str) -> None:
    """A problem is one line a terminal shows as it is, and quotes at most a part of a huge value."""
    assert len(line) < 1200, f"a problem quoting a whole value ({len(line)} characters): {line[:200]}"
    assert not any(is_control(c) for c in line), f"a control character in {line!r:.300}"


def assert_refusal_names_keys(exc: ConfigError, data: dict, path: Path) -> None:
    """Every problem starts with a key path of the document (or with the file, when it is no TOML);
    none quotes a huge value."""
    assert exc.errors, "a refusal without a problem"
    assert exc.source == path
    for line in exc.errors:
        assert_printable(line)
        key = key_of(line)
        assert key == str(path) or locates(data, key), (key, line)


def names_the_change(exc: ConfigError, change: tuple[str, tuple, object]) -> bool:
    """Whether a problem names the changed key: its path, a table holding it whose message says its
    name (a rule across fields), or a key inside the value it was given."""
    target = ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in change[1])
    for line in exc.errors:
        key = key_of(line)
        if key == target or key.startswith(target + "."):
            return True
        holds = target.startswith(key + ".") or key == "(top level)"
        if holds and str(change[1][-1]) in line.split(": ", 1)[1]:
            return True
    return False


def is_control(c: str) -> bool:
    return ord(c) < 0x20 or ord(c) == 0x7F


def assert_usable(s: Settings) -> None:
    """What the daemon does with an accepted configuration cannot fail on the values themselves."""
    for name in ("hop_seconds", "max_backlog_seconds"):
        assert math.isfinite(getattr(s.model, name))
    assert s.model.max_backlog_seconds >= s.model.hop_seconds
    for value in (*s.decision.model_dump().values(), s.mqtt.state_heartbeat_s, s.mqtt.reconnect_max_s):
        assert math.isfinite(value) and value > 0
    names = {
        "mqtt.prefix": s.mqtt.prefix,
        "mqtt.discovery.prefix": s.mqtt.discovery.prefix,
        "mqtt.client_id": s.mqtt.client_id,
        "mqtt.username": s.mqtt.username or "user",
    }
    for i, h in enumerate(s.headsets):
        names[f"headsets.{i}.device"] = h.device
        names[f"headsets.{i}.user"] = h.user
        assert math.isfinite(h.resolve_timeout_s) and h.resolve_timeout_s > 0
        fields = (h.stream.name, h.stream.type, h.stream.source_id, h.stream.host)
        assert not any(is_control(c) for v in fields if v for c in v)  # compared with liblsl's C strings
    for key, name in names.items():
        assert name and len(name) <= MAX_NAME_LENGTH, (key, len(name))
        assert not any(is_control(c) for c in name), (key, name)
    host = s.mqtt.host
    assert host and len(host) <= 253 and not any(is_control(c) for c in host), host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host.encode("idna")  # what the socket layer does with a host name; raises UnicodeError
    for path in (s.templates.directory, s.templates.key_file, s.mqtt.password_file, s.model.checkpoint):
        assert path is None or "\x00" not in os.fspath(path)


# -- the properties


def test_the_base_configuration_is_valid(files):
    s = load_settings(write(files, to_toml(base_config(files))))
    assert_usable(s)
    assert [h.user for h in s.headsets] == ["alice", "bob"]
    assert validate_main(write(files, to_toml(base_config(files)))) == 0


@examples(300)
@given(change=changes())
@example(change=("set", ("headsets", 0, "stream", "host"), "\x1f"))  # found: accepted
@example(change=("set", ("mqtt", "host"), "a..b"))  # found: accepted, UnicodeError at connection
@example(change=("set", ("mqtt", "host"), "h" * 300))
@example(change=("set", ("mqtt", "username"), "neuroauthd\x00"))
@example(change=("set", ("templates", "key_file"), ""))  # found: the working directory
@example(change=("set", ("model", "checkpoint"), "c" * 256))  # found: OSError
@example(change=("add", ("\x1b[2J",), False))  # found: the key printed as it is
def test_a_changed_configuration_is_accepted_or_refused_naming_the_key(files, change):
    data = apply(base_config(files), change)
    path = write(files, to_toml(data))
    try:
        s = load_settings(path)
    except ConfigError as exc:
        assert_refusal_names_keys(exc, data, path)
        assert names_the_change(exc, change), (change, exc.errors)
    else:
        assert_usable(s)


top_keys = st.sampled_from(
    ["lsl", "model", "templates", "decision", "mqtt", "headsets", "log_level"]
) | st.text(TEXT, min_size=1, max_size=10)


@examples(200)
@given(document=st.dictionaries(top_keys, wild_values, max_size=5))
def test_any_toml_document_is_accepted_or_refused_by_key_path(files, document):
    path = write(files, to_toml(document))
    try:
        s = load_settings(path)
    except ConfigError as exc:
        assert_refusal_names_keys(exc, document, path)
    else:
        assert_usable(s)


@examples(150)
@given(raw=st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_any_bytes_are_accepted_or_refused(files, raw):
    path = write(files, raw)
    try:
        s = load_settings(path)
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            assert_printable(line)
    else:
        assert_usable(s)


ENV_NAMES = [
    "NEUROAUTH_" + "__".join(str(p).upper() for p in path)
    for path in BASE_PATHS
    if not isinstance(path[-1], int)
]
env_names = st.sampled_from(
    [*ENV_NAMES, "NEUROAUTH_MQTT__PASSWORD", "NEUROAUTH_HEADSETS", "NEUROAUTH_MQTT"]
) | st.text(st.characters(codec="ascii", categories=("Lu", "Nd", "Pc")), min_size=1, max_size=12).map(
    lambda s: "NEUROAUTH_" + s
)
env_values = (
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
    | st.sampled_from(['[{"device": "e", "user": "a"}]', "[{", "{bad", "{}", "[]", "null", "1e999", "nan"])
    | st.builds(lambda v: toml_value(v).replace("\x00", ""), values)
)


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in variables.items():
            mp.setenv(name, value)
        yield


MINIMAL = '[[headsets]]\ndevice = "eeg1"\nuser = "alice"\n'


@examples(250)
@given(variables=st.dictionaries(env_names, env_values, min_size=1, max_size=3))
@example(variables={"NEUROAUTH_MQTT": "{bad"})  # found: SettingsError
@example(variables={"NEUROAUTH_MQTT__DISCOVERY": ":", "NEUROAUTH_HEADSETS": "[{"})
@example(variables={"NEUROAUTH_MQTT__PASSWORD_FILE": "\x1f" * 300})  # found: printed as it is
def test_environment_variables_are_accepted_or_refused_naming_the_variable(files, variables):
    path = write(files, MINIMAL)
    with environment(variables):
        try:
            s = load_settings(path)
        except ConfigError as exc:
            assert exc.errors
            given = [name.removeprefix("NEUROAUTH_").lower().split("__") for name in variables]
            for line in exc.errors:
                assert_printable(line)
                parts = key_of(line).split(".")
                if any(parts[: len(g)] == g for g in given):  # a value the environment gave
                    assert "environment variable NEUROAUTH_" in line, line
        else:
            assert_usable(s)


def validate(path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = validate_main(path)
    return status, err.getvalue()


@pytest.mark.slow
@examples(150)
@given(change=changes())
def test_validate_config_accepts_or_refuses_a_changed_configuration(files, change):
    """``neuroauthd --validate-config``: the configuration, then the checkpoint and templates it names."""
    data = apply(base_config(files), change)
    path = write(files, to_toml(data))
    status, err = validate(path)
    assert status in (0, 2)
    if status == 2:
        assert "is invalid" in err and str(path) in err
        problems = [line.strip() for line in err.split("\n")[1:] if line.strip()]
        for line in problems:  # the checkpoint's problems are its key's, given or not (shipped model)
            assert_printable(line)
            assert key_of(line) in (str(path), "model.checkpoint") or locates(data, key_of(line)), line


def broken(files: dict[str, Path], section: str, key: str, value: object) -> str:
    """The base configuration with ``section.key`` set to ``value`` and an unknown key beside it."""
    data = base_config(files)
    data[section][key] = value
    data["mqtt"]["colour"] = "blue"
    return to_toml(data)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        pytest.param(
            "templates",
            "directory",
            True,
            id="directory-true",
        ),
        pytest.param(
            "model",
            "checkpoint",
            "~nosuchuser/model.pt",
            id="checkpoint-in-an-unknown-home",
        ),
        pytest.param(
            "templates",
            "directory",
            "/var/lib/neuroauth\x00/templates",
            id="directory-with-a-NUL",
        ),
        pytest.param(
            "model",
            "checkpoint",
            "c" * 256,
            id="checkpoint-name-too-long",
        ),
        pytest.param(
            "templates",
            "directory",
            "/var/lib/\x1b[2Jneuroauth",
            id="directory-with-a-control-character",
        ),
        pytest.param(
            "templates",
            "directory",
            "d" * 100_000,
            id="directory-name-too-long",
        ),
    ],
)
def test_validate_config_reports_a_broken_configurations_paths(files, section, key, value):
    path = write(files, broken(files, section, key, value))
    status, err = validate(path)
    assert status == 2 and f"{section}.{key}: " in err and "mqtt.colour: unknown key" in err
    for line in err.split("\n")[1:]:
        assert_printable(line)


def test_a_hop_that_is_no_whole_number_of_samples_is_refused_by_validate_config(files):
    from neuroauth.models.streaming import EngineConfig, StreamingEngine

    with pytest.raises(ValueError, match="not a whole number of samples"):
        StreamingEngine(make_model(), EngineConfig(hop_seconds=0.123))  # 24.6 samples at 200 Hz
    data = base_config(files)
    data["model"]["hop_seconds"] = 0.123
    status, err = validate(write(files, to_toml(data)))
    assert status == 2 and "model.hop_seconds: " in err, err


def test_a_huge_user_name_is_refused_quoting_a_part_of_it(files):
    data = base_config(files)
    data["headsets"][0]["user"] = "u" * 100_000
    with pytest.raises(ConfigError) as caught:
        load_settings(write(files, to_toml(data)))
    assert any(line.startswith("headsets.0.user: ") for line in caught.value.errors)
    for line in caught.value.errors:
        assert_printable(line)
