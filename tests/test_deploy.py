"""The shipped deployment files are usable as they are."""

from __future__ import annotations

import configparser
from pathlib import Path

from neuroauth.config import load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_the_example_configuration_is_valid(tmp_path, monkeypatch):
    password = tmp_path / "mqtt-password"
    password.write_text("secret\n")
    # on a real host systemd provides the credential file the example points at
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD_FILE", str(password))
    settings = load_settings(DEPLOY / "neuroauthd.toml")
    assert settings.mqtt.username and settings.secret_password() == "secret"
    assert settings.lsl.loopback_only and settings.headsets[0].user == "alice"


def test_the_unit_notifies_watches_and_runs_unprivileged():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "neuroauthd.service").read_text())
    service = unit["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["User"] != "root" and service["StateDirectory"] == "neuroauth"
    assert "--validate-config" in service["ExecStartPre"]
    assert service["Restart"] == "always"  # a stop systemd did not ask for is restarted, SIGHUP's 75 too
    assert "AF_INET" in service["RestrictAddressFamilies"]  # LSL and MQTT need UDP and TCP
    lines = (DEPLOY / "neuroauthd.service").read_text().splitlines()
    # keys systemd takes several times, which configparser keeps one of
    credentials = dict(
        line.split("=", 1)[1].split(":", 1) for line in lines if line.startswith("LoadCredential=")
    )
    environment = dict(
        line.split("=", 1)[1].split("=", 1) for line in lines if line.startswith("Environment=")
    )
    assert sorted(credentials) == ["mqtt-password", "template-key"], credentials
    # the key handed over is the one the first enrollment creates beside the service's templates
    from neuroauth.enroll.template_key import default_key_file

    templates = environment["NEUROAUTH_TEMPLATES__DIRECTORY"]
    assert credentials["template-key"] == str(default_key_file(templates)), (credentials, templates)
