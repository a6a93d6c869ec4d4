"""The settings tree: a TOML file plus NEUROAUTH_* variables, errors by key path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from neuroauth.config import ConfigError, Settings, load_settings, validate
from neuroauth.errors import NeuroAuthError

EXAMPLE = """\
log_level = "debug"

[lsl]
loopback_only = true

[model]
checkpoint = "{checkpoint}"
hop_seconds = 0.5
max_backlog_seconds = 4.0

[templates]
directory = "{templates}"

[decision]
false_lockouts_per_hour = 0.5
time_to_lock_s = 8.0
no_signal_after_s = 2.0

[mqtt]
host = "broker.example.org"
port = 8883
prefix = "home/neuroauth"
client_id = "neuroauthd-desk"
username = "neuroauthd"
password_file = "{password_file}"
keepalive = 30
publish_scores = false
reconnect_min_s = 0.5
reconnect_max_s = 30.0

[mqtt.tls]
enabled = true
ca_file = "{ca_file}"

[mqtt.discovery]
enabled = true
prefix = "homeassistant"

[[headsets]]
device = "desk"
user = "alice"
stream = {{ name = "Muse-1234", type = "EEG" }}
resolve_timeout_s = 3.0

[[headsets]]
device = "door-left"
user = "bob"
stream = {{ source_id = "openbci-5678" }}
"""

MINIMAL = """\
[[headsets]]
device = "eeg1"
user = "alice"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No NEUROAUTH_* or systemd variable of the machine leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("NEUROAUTH_") or name in ("STATE_DIRECTORY",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str, name: str = "neuroauthd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def example(tmp_path) -> Path:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not read by the config")
    password_file = tmp_path / "mqtt.password"
    password_file.write_text("s3cret-from-file\n")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    text = EXAMPLE.format(
        checkpoint=checkpoint,
        templates=tmp_path / "templates",
        password_file=password_file,
        ca_file=ca_file,
    )
    return write(tmp_path, text)


def test_full_example_loads(example, tmp_path):
    s = load_settings(example)
    assert s.log_level == "DEBUG"
    assert s.lsl.loopback_only is True
    assert s.model.checkpoint == tmp_path / "model.pt"
    assert (s.model.hop_seconds, s.model.max_backlog_seconds) == (0.5, 4.0)
    assert s.templates.directory == tmp_path / "templates"
    assert (s.decision.false_lockouts_per_hour, s.decision.time_to_lock_s, s.decision.no_signal_after_s) == (
        0.5,
        8.0,
        2.0,
    )
    m = s.mqtt
    assert (m.host, m.port, m.prefix, m.client_id, m.username) == (
        "broker.example.org",
        8883,
        "home/neuroauth",
        "neuroauthd-desk",
        "neuroauthd",
    )
    assert m.tls.enabled and m.tls.ca_file == tmp_path / "ca.pem" and not m.tls.insecure
    assert m.discovery.enabled and m.discovery.prefix == "homeassistant"
    assert (m.keepalive, m.publish_scores, m.reconnect_min_s, m.reconnect_max_s) == (30, False, 0.5, 30.0)
    assert s.secret_password() == "s3cret-from-file"
    assert "s3cret" not in repr(s)
    assert [(h.device, h.user) for h in s.headsets] == [("desk", "alice"), ("door-left", "bob")]
    assert (s.headsets[0].stream.name, s.headsets[0].stream.type, s.headsets[0].stream.source_id) == (
        "Muse-1234",
        "EEG",
        None,
    )
    assert s.headsets[0].resolve_timeout_s == 3.0
    assert s.headsets[1].stream.source_id == "openbci-5678" and s.headsets[1].stream.type is None
    assert validate(example) == []


def test_defaults(tmp_path):
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.lsl.loopback_only is True
    assert s.model.checkpoint is None
    assert (s.model.hop_seconds, s.model.max_backlog_seconds) == (1.0, 8.0)
    assert (s.decision.false_lockouts_per_hour, s.decision.time_to_lock_s, s.decision.no_signal_after_s) == (
        2.0,
        10.0,
        3.0,
    )
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.prefix) == ("127.0.0.1", 1883, "neuroauth")
    assert s.mqtt.client_id.startswith("neuroauthd-")
    assert not s.mqtt.tls.enabled and not s.mqtt.discovery.enabled and s.mqtt.publish_scores
    assert s.secret_password() is None
    assert s.headsets[0].stream.type == "EEG"
    assert s.log_level == "INFO"


def test_environment_overrides_the_file(example, monkeypatch):
    monkeypatch.setenv("NEUROAUTH_MQTT__HOST", "10.0.0.7")
    monkeypatch.setenv("NEUROAUTH_MQTT__PORT", "18883")
    monkeypatch.setenv("NEUROAUTH_MODEL__HOP_SECONDS", "0.25")
    monkeypatch.setenv("NEUROAUTH_LOG_LEVEL", "warning")
    monkeypatch.setenv("NEUROAUTH_MQTT__TLS__INSECURE", "true")
    s = load_settings(example)
    assert s.mqtt.tls.insecure and s.mqtt.tls.enabled
    assert (s.mqtt.host, s.mqtt.port, s.model.hop_seconds, s.log_level) == (
        "10.0.0.7",
        18883,
        0.25,
        "WARNING",
    )
    # Keys the environment does not name keep their values from the file.
    assert s.mqtt.prefix == "home/neuroauth" and s.model.max_backlog_seconds == 4.0


def test_environment_alone(monkeypatch):
    monkeypatch.setenv("NEUROAUTH_HEADSETS", json.dumps([{"device": "eeg1", "user": "alice"}]))
    monkeypatch.setenv("NEUROAUTH_MQTT__USERNAME", "neuroauthd")
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "from-env")
    s = load_settings(None)
    assert s.headsets[0].device == "eeg1"
    assert s.secret_password() == "from-env"
    assert s.mqtt.secret_password() == "from-env"


def test_templates_directory_defaults(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL)
    assert load_settings(path).templates.directory == tmp_path / "home/.local/share/neuroauth/templates"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/neuroauth:/var/lib/other")
    assert load_settings(path).templates.directory == Path("/var/lib/neuroauth/templates")
    monkeypatch.setenv("NEUROAUTH_TEMPLATES__DIRECTORY", str(tmp_path / "mine"))
    assert load_settings(path).templates.directory == tmp_path / "mine"


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.errors == validate(path)
    return caught.value.errors


KEY_PATH_CASES = [
    ("[mqtt]\nport = 'mqtt'\n" + MINIMAL, "mqtt.port: Input should be a valid integer"),
    ("[mqtt]\nport = 70000\n" + MINIMAL, "mqtt.port: Input should be less than or equal to 65535"),
    ("[mqtt]\nhots = 'broker'\n" + MINIMAL, "mqtt.hots: unknown key; the keys here are "),
    ("[mqqt]\nhost = 'broker'\n" + MINIMAL, "mqqt: unknown key"),
    ("[mqtt.tls]\nenable = true\n" + MINIMAL, "mqtt.tls.enable: unknown key"),
    ("[mqtt]\nprefix = 'home/+/x'\n" + MINIMAL, "mqtt.prefix: 'home/+/x' contains an MQTT wildcard"),
    ("[mqtt]\nprefix = 'home/#'\n" + MINIMAL, "mqtt.prefix: 'home/#' contains an MQTT wildcard"),
    ("[mqtt]\nprefix = 'home//x'\n" + MINIMAL, "mqtt.prefix: 'home//x' has an empty topic level"),
    ("[mqtt]\nprefix = 'neuroauth/'\n" + MINIMAL, "mqtt.prefix: 'neuroauth/' has an empty topic level"),
    ("[mqtt]\nprefix = ''\n" + MINIMAL, "mqtt.prefix: must not be empty"),
    (
        "[mqtt.discovery]\nprefix = '/ha'\n" + MINIMAL,
        "mqtt.discovery.prefix: '/ha' has an empty topic level",
    ),
    (
        "[mqtt]\nreconnect_min_s = 10\nreconnect_max_s = 5\n" + MINIMAL,
        "mqtt: reconnect_min_s (10.0) is larger",
    ),
    ("[mqtt.tls]\nenabled = true\nca_file = '/nonexistent/ca.pem'\n" + MINIMAL, "mqtt.tls.ca_file: "),
    (
        "[model]\nhop_seconds = 0\n" + MINIMAL,
        "model.hop_seconds: Input should be greater than or equal to 0.1",
    ),
    (
        "[model]\nhop_seconds = 0.001\n" + MINIMAL,
        "model.hop_seconds: Input should be greater than or equal to 0.1",
    ),
    (
        "[model]\nmax_backlog_seconds = 1e7\n" + MINIMAL,
        "model.max_backlog_seconds: Input should be less than",
    ),
    ('[mqtt]\nprefix = "a\\u0007b"\n' + MINIMAL, "mqtt.prefix: 'a\\x07b' contains a control character"),
    ("[mqtt]\nclient_id = 'has space'\n" + MINIMAL, "mqtt.client_id: String should match pattern"),
    ("[mqtt]\nprefix = '" + "p" * 300 + "'\n" + MINIMAL, "mqtt.prefix: is 300 characters long"),
    ("[[headsets]]\ndevice = '" + "d" * 65 + "'\nuser = 'u'\n", "headsets.0.device: 'ddd"),
    ("[model]\nhop_seconds = 2\nmax_backlog_seconds = 1\n" + MINIMAL, "model: max_backlog_seconds (1.0)"),
    ("[model]\ncheckpoint = '/nonexistent/model.pt'\n" + MINIMAL, "model.checkpoint: "),
    (
        "[decision]\ntime_to_lock_s = -1\n" + MINIMAL,
        "decision.time_to_lock_s: Input should be greater than 0",
    ),
    ("log_level = 'loud'\n" + MINIMAL, "log_level: Input should be 'DEBUG'"),
    ("[lsl]\n", "headsets: no headset configured; add a [[headsets]] table"),
    (MINIMAL + MINIMAL.replace("alice", "bob"), "headsets: device 'eeg1' of headsets[1] is already used"),
    (
        "[[headsets]]\ndevice = 'eeg 1'\nuser = 'alice'\n",
        "headsets.0.device: 'eeg 1' is not a valid device id",
    ),
    (
        "[[headsets]]\ndevice = 'eeg/1'\nuser = 'alice'\n",
        "headsets.0.device: 'eeg/1' is not a valid device id",
    ),
    ("[[headsets]]\ndevice = 'eeg1'\n", "headsets.0.user: required"),
    ("[[headsets]]\ndevice = 'e'\nuser = '../x'\n", "headsets.0.user: user name '../x' is not allowed"),
    ("[[headsets]]\ndevice = 'e'\nuser = 'a'\nstream = {}\n", "headsets.0.stream: give at least one of"),
    ("[[headsets]]\ndevice = 'e'\nuser = 'a'\ncolour = 1\n", "headsets.0.colour: unknown key"),
    (
        MINIMAL + "[[headsets]]\ndevice = 'eeg2'\nuser = 'bob'\n",
        "headsets: headsets[1] selects the same LSL stream as headsets[0]",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    KEY_PATH_CASES,
    ids=[f"{i}-{expected.split(':')[0]}" for i, (_, expected) in enumerate(KEY_PATH_CASES)],
)
def test_errors_are_reported_by_key_path(tmp_path, text, expected):
    errors = errors_of(tmp_path, text)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_is_reported_at_once(tmp_path):
    text = "[mqtt]\nport = 0\nprefix = '#'\n[model]\nhop_seconds = -1\n"
    text += "[[headsets]]\ndevice = 'a b'\nuser = 'x'\n"
    errors = errors_of(tmp_path, text)
    keys = sorted(e.split(":", 1)[0] for e in errors)
    assert keys == ["headsets.0.device", "model.hop_seconds", "mqtt.port", "mqtt.prefix"]


def test_config_error_is_a_neuroauth_error_naming_the_file(tmp_path):
    path = write(tmp_path, "[mqtt]\nport = 0\n" + MINIMAL)
    with pytest.raises(NeuroAuthError) as caught:
        load_settings(path)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.source == path
    assert str(path) in str(caught.value) and "mqtt.port" in str(caught.value)


def test_value_from_the_environment_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROAUTH_MQTT__PORT", "not-a-port")
    monkeypatch.setenv("NEUROAUTH_MQTT__PASWORD", "typo")
    errors = errors_of(tmp_path, MINIMAL)
    assert any(
        e.startswith("mqtt.port: ") and "environment variable NEUROAUTH_MQTT__PORT" in e for e in errors
    ), errors
    assert any(
        e.startswith("mqtt.pasword: unknown key") and "NEUROAUTH_MQTT__PASWORD" in e for e in errors
    ), errors
    # The password itself never appears in an error.
    monkeypatch.delenv("NEUROAUTH_MQTT__PASWORD")
    monkeypatch.delenv("NEUROAUTH_MQTT__PORT")
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "hunter2-secret")
    errors = errors_of(tmp_path, "[mqtt]\nhost = 'broker.example.org'\nusername = 'u'\n" + MINIMAL)
    assert errors and not any("hunter2" in e for e in errors)


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "[mqtt]\nhost = 'ok'\nport = = 1883\n", name="broken.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    (error,) = caught.value.errors
    assert error.startswith(f"{path}: invalid TOML")
    assert "line 3" in error


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "absent.toml"
    assert validate(path) == [f"{path}: the configuration file does not exist"]


# Passwords ------------------------------------------------------------------------------


def test_password_in_the_config_file_is_refused(tmp_path):
    errors = errors_of(tmp_path, "[mqtt]\nusername = 'u'\npassword = 'in-the-file'\n" + MINIMAL)
    assert errors[0].startswith("mqtt.password: a password does not belong in the config file")
    assert "NEUROAUTH_MQTT__PASSWORD" in errors[0] and "in-the-file" not in errors[0]


def test_password_and_password_file_are_exclusive(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "from-env")
    errors = errors_of(tmp_path, f"[mqtt]\nusername = 'u'\npassword_file = '{secret}'\n" + MINIMAL)
    assert any(e.startswith("mqtt.password_file: password (NEUROAUTH_MQTT__PASSWORD) and") for e in errors)


def test_missing_password_file_is_named(tmp_path):
    secret = tmp_path / "no-such-secret"
    errors = errors_of(tmp_path, f"[mqtt]\nusername = 'u'\npassword_file = '{secret}'\n" + MINIMAL)
    assert f"mqtt.password_file: password file {secret} does not exist" in errors


def test_unreadable_password_file_is_named(tmp_path):
    secret = tmp_path / "a-directory"
    secret.mkdir()
    errors = errors_of(tmp_path, f"[mqtt]\nusername = 'u'\npassword_file = '{secret}'\n" + MINIMAL)
    assert any(e.startswith(f"mqtt.password_file: cannot read password file {secret}") for e in errors), (
        errors
    )


def test_password_needs_a_username(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "pw")
    errors = errors_of(tmp_path, MINIMAL)
    assert any(e.startswith("mqtt: a password is set but no username") for e in errors), errors


def test_password_over_plain_tcp_to_another_host_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "pw")
    remote = "[mqtt]\nhost = 'broker.example.org'\nusername = 'u'\n"
    errors = errors_of(tmp_path, remote + MINIMAL)
    assert any(
        e.startswith("mqtt: the password would travel in clear text to broker.example.org") for e in errors
    )

    allowed = load_settings(write(tmp_path, remote + "allow_plaintext_password = true\n" + MINIMAL))
    assert allowed.secret_password() == "pw"

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with_tls = remote + f"[mqtt.tls]\nenabled = true\nca_file = '{ca}'\n"
    assert load_settings(write(tmp_path, with_tls + MINIMAL)).mqtt.tls.enabled


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "::1"])
def test_password_over_plain_tcp_to_this_machine_is_allowed(tmp_path, monkeypatch, host):
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "pw")
    s = load_settings(write(tmp_path, f"[mqtt]\nhost = '{host}'\nusername = 'u'\n" + MINIMAL))
    assert s.secret_password() == "pw"


def test_tls_files_without_tls_are_refused(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    errors = errors_of(tmp_path, f"[mqtt.tls]\nca_file = '{ca}'\n" + MINIMAL)
    assert any(e.startswith("mqtt.tls: ca_file set but enabled is false") for e in errors), errors


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    seen.add(model)
    for field in model.model_fields.values():
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                _models(candidate, seen)


def test_every_section_forbids_unknown_keys_and_describes_every_field():
    models: set[type[BaseModel]] = set()
    _models(Settings, models)
    assert len(models) >= 10
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


NAMES = [
    "alice",
    "bob.smith",
    "x_1-2",
    "7",
    "a" * 64,
    "a" * 65,
    "_x",
    "-x",
    ".x",
    "x y",
    "../x",
    "Zoë",
    "",
    "a/b",
]


@pytest.mark.parametrize("name", NAMES)
def test_an_owner_name_valid_in_one_place_is_valid_in_all(name, tmp_path):
    """Enrollment, the template store and the configuration apply one rule to owner names."""
    from neuroauth.enroll.store import TemplateStore
    from neuroauth.enroll.template import validate_user

    from neuroauth.config import HeadsetSettings
    from neuroauth.errors import TemplateError

    def accepted(check) -> bool:
        try:
            check()
        except (TemplateError, ValueError):
            return False
        return True

    verdicts = {
        "enrollment": accepted(lambda: validate_user(name)),
        "store": accepted(lambda: TemplateStore(tmp_path).path(name)),
        "configuration": accepted(lambda: HeadsetSettings(device="desk", user=name)),
    }
    assert len(set(verdicts.values())) == 1, verdicts
    expected = name in ("alice", "bob.smith", "x_1-2", "7", "a" * 64)
    assert verdicts["enrollment"] is expected
