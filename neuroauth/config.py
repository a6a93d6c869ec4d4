"""The one settings tree of ``neuroauthd``: a TOML file plus ``NEUROAUTH_*`` variables.

Every section is a pydantic model that forbids unknown keys, and every field says
what it does. Values come from two layers; the environment wins over the file:

1. the TOML file given to :func:`load_settings` (optional);
2. environment variables ``NEUROAUTH_<SECTION>__<KEY>``, e.g. ``NEUROAUTH_MQTT__HOST``
   (lists such as ``NEUROAUTH_HEADSETS`` take JSON).

The MQTT password is a secret: it comes from ``NEUROAUTH_MQTT__PASSWORD`` or from
``mqtt.password_file``, never from the config file itself.

:func:`validate` reports every problem of a configuration as ``key.path: message``
without starting anything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import socket
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from .enroll.store import default_templates_dir
from .enroll.template import validate_user
from .errors import NeuroAuthError, TemplateError

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "DecisionSettings",
    "DiscoverySettings",
    "HeadsetSettings",
    "LslSettings",
    "ModelSettings",
    "MqttSettings",
    "Settings",
    "StreamSelector",
    "TemplatesSettings",
    "TlsSettings",
    "load_settings",
    "validate",
]

ENV_PREFIX = "NEUROAUTH_"
ENV_NESTED_DELIMITER = "__"

_DEVICE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(NeuroAuthError):
    """A configuration cannot be used; ``errors`` lists every problem as ``key.path: message``."""

    def __init__(self, errors: list[str], source: Path | None = None, data: dict | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        self.data = data or {}  # what the file held, as far as it could be read
        where = f"the configuration in {source}" if source is not None else "the configuration"
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{where} is invalid ({len(self.errors)} problem(s)):\n{lines}")


MAX_SHOWN_PATH = 200  # characters of a path quoted in a message
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096  # Linux's NAME_MAX and PATH_MAX


def _shown_path(path: str | os.PathLike) -> str:
    """``path`` for a message: quoted when it holds a character a terminal would act on, cut when huge."""
    text = os.fspath(path)
    limit = MAX_SHOWN_PATH if text[:MAX_SHOWN_PATH].isprintable() else 80
    shown = text[:limit] if limit == MAX_SHOWN_PATH else repr(text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"


def _expand_user(value: Any) -> Any:
    if value == "":
        raise ValueError("is empty, which would mean the working directory; give a path or leave the key out")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{value[:80]!r} contains a NUL character, which no file name can")
    if isinstance(value, str) and has_control_character(value):
        raise ValueError(f"{value[:80]!r} contains a control character; write the path without it")
    if isinstance(value, str) and (
        len(value.encode()) > MAX_PATH_BYTES
        or any(len(p.encode()) > MAX_NAME_BYTES for p in value.split("/"))
    ):
        raise ValueError(
            f"{value[:80]!r}... ({len(value)} characters) is longer than a path can be (a name at most "
            f"{MAX_NAME_BYTES} bytes, the whole at most {MAX_PATH_BYTES})"
        )
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    return value


def _lookup_file(value: Any) -> Any:
    value = _expand_user(value)
    if isinstance(value, str):
        try:
            os.stat(value)
        except (FileNotFoundError, NotADirectoryError):
            pass  # said by the check that it is a file
        except OSError as exc:  # a name too long, a loop of links: the check itself would raise
            raise ValueError(f"{value[:80]!r} cannot be looked up: {exc.strerror}") from None
    return value


# A path as written by an operator ("~" expanded), and one that must name an existing file.
UserPath = Annotated[Path, BeforeValidator(_expand_user)]
ExistingFile = Annotated[FilePath, BeforeValidator(_lookup_file)]


MAX_NAME_LENGTH = 200  # topic prefixes, client ids: far above any real one, far below MQTT's 65,535
MAX_HOST_LENGTH = 253  # DNS


def has_control_character(value: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def check_topic_prefix(value: str) -> str:
    """Return ``value`` if it can start MQTT topic names, else raise ``ValueError`` saying why."""
    if not value:
        raise ValueError("must not be empty")
    if "+" in value or "#" in value:
        raise ValueError(f"{value[:80]!r} contains an MQTT wildcard (+ or #); topic names cannot")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"is {len(value)} characters long; keep it to {MAX_NAME_LENGTH}")
    if has_control_character(value):
        raise ValueError(f"{value[:80]!r} contains a control character, which brokers refuse")
    if value.startswith("$"):
        raise ValueError(f"{value[:80]!r} starts with '$', which brokers reserve for their own topics")
    if any(level == "" for level in value.split("/")):
        raise ValueError(
            f"{value[:80]!r} has an empty topic level (a leading, trailing or doubled '/'); "
            "write levels separated by single slashes, e.g. 'home/neuroauth'"
        )
    return value


def check_host(value: str) -> str:
    """Return ``value`` if the socket layer can look it up (an address, or a host name it can encode),
    else raise ``ValueError`` saying why."""
    if len(value) > MAX_HOST_LENGTH or has_control_character(value):
        raise ValueError(
            f"{value[:80]!r} is not a host name or address: it is {len(value)} characters long or holds "
            f"a control character (a host name has at most {MAX_HOST_LENGTH} printable characters)"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        try:
            value.encode("idna")  # what socket.getaddrinfo does with a host name
        except UnicodeError as exc:
            raise ValueError(
                f"{value[:80]!r} is not a host name or address ({exc}); write a name such as "
                "broker.example.org or an address such as 192.0.2.10"
            ) from None
    return value


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine without any lookup (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _default_client_id() -> str:
    """``neuroauthd-<hostname>-<random>``: a guessable identifier would let any client kick the daemon
    off the broker by connecting under it; a new one each start."""
    return f"neuroauthd-{socket.gethostname()}-{secrets.token_hex(4)}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LslSettings(_Section):
    """How the daemon finds LSL streams."""

    loopback_only: bool = Field(
        default=True,
        description="Keep LSL stream discovery on 127.0.0.1: the daemon runs on the machine the "
        "headset streams from, and EEG should not be discoverable on the network.",
    )


class ModelSettings(_Section):
    """The checkpoint and how often it runs."""

    checkpoint: ExistingFile | None = Field(
        default=None,
        description="Checkpoint file to load; unset means the shipped 4-channel model.",
    )
    hop_seconds: float = Field(
        default=1.0, ge=0.1, le=10.0, description="Seconds of new EEG between two scored windows (0.1 to 10)."
    )
    max_backlog_seconds: float = Field(
        default=8.0,
        gt=0,
        le=600.0,
        description="Most seconds of EEG allowed to wait for the model; older samples are dropped "
        "(and logged) so that decisions stay current.",
    )

    check_rate: bool = Field(
        default=True,
        description="Restart a stream whose timestamps show another sampling rate than it announces "
        "(more than 5 % off); its windows wait until the rate is confirmed. Turn off only for "
        "recordings replayed faster than real time.",
    )

    @model_validator(mode="after")
    def _backlog_holds_a_hop(self) -> ModelSettings:
        if self.max_backlog_seconds < self.hop_seconds:
            raise ValueError(
                f"max_backlog_seconds ({self.max_backlog_seconds}) is shorter than hop_seconds "
                f"({self.hop_seconds}); the backlog must hold at least one hop"
            )
        return self


class TemplatesSettings(_Section):
    """Where enrolled owners' templates live."""

    directory: UserPath = Field(
        default_factory=default_templates_dir,
        description="Directory of owner templates. Default: $STATE_DIRECTORY/templates (systemd "
        "StateDirectory=), else ~/.local/share/neuroauth/templates; NEUROAUTH_TEMPLATES__DIRECTORY sets "
        "it for every command.",
    )
    key_file: UserPath | None = Field(
        default=None,
        description="The installation key templates are signed with (created by the first enrollment, "
        "mode 600). Default: the systemd credential template-key when the service has one, else "
        "template.key beside the templates directory; NEUROAUTH_TEMPLATES__KEY_FILE sets it for every "
        "command.",
    )


class DecisionSettings(_Section):
    """Targets of the decision over time."""

    false_lockouts_per_hour: float = Field(
        default=2.0, gt=0, le=3600.0, description="Tolerated rate at which the wearing owner gets locked out."
    )
    time_to_lock_s: float = Field(
        default=10.0,
        gt=0,
        le=3600.0,
        description="Target seconds to lock once someone else wears the headset.",
    )
    no_signal_after_s: float = Field(
        default=3.0,
        ge=0.5,
        le=3600.0,
        description="Seconds without usable EEG (no samples, flat, clipped) before the state is NO_SIGNAL.",
    )


class TlsSettings(_Section):
    """TLS towards the MQTT broker."""

    enabled: bool = Field(default=False, description="Connect to the broker over TLS.")
    ca_file: ExistingFile | None = Field(
        default=None,
        description="CA certificate(s) to verify the broker with; unset means the system's CAs.",
    )
    cert_file: ExistingFile | None = Field(
        default=None, description="Client certificate, for brokers that authenticate clients by certificate."
    )
    key_file: ExistingFile | None = Field(default=None, description="Private key of cert_file.")
    insecure: bool = Field(
        default=False,
        description="Skip the check that the broker's certificate names mqtt.host. The certificate "
        "chain is still verified; use only for brokers reached by an address their certificate lacks.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if not self.enabled:
            given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set but enabled is false, so the connection would not "
                    "use TLS; set enabled = true or remove them"
                )
        return self


class DiscoverySettings(_Section):
    """Home Assistant MQTT discovery."""

    enabled: bool = Field(
        default=False,
        description="Publish Home Assistant discovery configs: a lock sensor and a score sensor per headset.",
    )
    prefix: str = Field(default="homeassistant", description="Home Assistant's discovery topic prefix.")

    @field_validator("prefix")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return check_topic_prefix(value)


class MqttSettings(_Section):
    """The MQTT broker the daemon publishes to."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    prefix: str = Field(
        default="neuroauth",
        description="First topic level(s) of everything the daemon publishes: <prefix>/status, "
        "<prefix>/<device>/state, /event, /score.",
    )
    client_id: str = Field(
        default_factory=_default_client_id,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="MQTT client identifier; must be unique on the broker (default "
        "neuroauthd-<hostname>-<random>, new at every start).",
    )
    username: str | None = Field(default=None, description="User name to log in to the broker with.")
    password: SecretStr | None = Field(
        default=None,
        description="Broker password; set it through the environment variable NEUROAUTH_MQTT__PASSWORD, "
        "never in the config file.",
    )
    password_file: UserPath | None = Field(
        default=None,
        description="File holding the broker password (first line; read when the config loads). "
        "Exclusive with password.",
    )
    state_heartbeat_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between republishing every headset's state with a fresh timestamp, so that "
        "a consumer can treat a state older than a few heartbeats as stale (locked).",
    )
    keepalive: int = Field(
        default=60,
        ge=5,
        le=65535,
        description="Seconds between keep-alive pings; the broker publishes the will (offline) "
        "after about 1.5 times this without traffic.",
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS to the broker.")
    allow_plaintext_password: bool = Field(
        default=False,
        description="Allow sending the password without TLS to a broker on another machine. "
        "Off by default: anyone on the path could read it.",
    )
    publish_scores: bool = Field(
        default=True, description="Publish every window's score on <prefix>/<device>/score."
    )
    discovery: DiscoverySettings = Field(
        default_factory=DiscoverySettings, description="Home Assistant MQTT discovery."
    )
    reconnect_min_s: float = Field(
        default=1.0, gt=0, le=3600.0, description="First delay before reconnecting to the broker (seconds)."
    )
    reconnect_max_s: float = Field(
        default=60.0, gt=0, le=3600.0, description="Longest delay between reconnection attempts (seconds)."
    )

    _file_password: SecretStr | None = PrivateAttr(default=None)

    @field_validator("prefix")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return check_topic_prefix(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > MAX_NAME_LENGTH or has_control_character(value)):
            raise ValueError(
                f"{value[:80]!r} is {len(value)} characters long or holds a control character; a broker "
                f"user name has at most {MAX_NAME_LENGTH} printable characters"
            )
        return value

    @field_validator("password_file")
    @classmethod
    def _readable_password_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if info.data.get("password") is not None:
            raise ValueError("password (NEUROAUTH_MQTT__PASSWORD) and password_file are both set; keep one")
        _read_password_file(value)
        return value

    @model_validator(mode="after")
    def _credentials(self) -> MqttSettings:
        if self.password_file is not None:
            self._file_password = SecretStr(_read_password_file(self.password_file))
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) is larger than reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        has_password = self.password is not None or self.password_file is not None
        if has_password and self.username is None:
            raise ValueError("a password is set but no username; MQTT sends a password only with a username")
        if (
            has_password
            and not self.tls.enabled
            and not self.allow_plaintext_password
            and not is_loopback_host(self.host)
        ):
            raise ValueError(
                f"the password would travel in clear text to {self.host}:{self.port} (tls.enabled is "
                "false); enable mqtt.tls, use a broker on this machine, or set "
                "mqtt.allow_plaintext_password = true if the network is trusted"
            )
        return self

    def secret_password(self) -> str | None:
        """The broker password from the environment or ``password_file``, or None."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self._file_password is not None:
            return self._file_password.get_secret_value()
        return None


def _read_password_file(path: Path) -> str:
    shown = _shown_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"password file {shown} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read password file {shown}: {reason}") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ValueError(f"password file {shown} is empty; write the password on its first line")
    return lines[0]


class StreamSelector(_Section):
    """Which LSL stream carries a headset's EEG; every field given must match.

    The one selector of the project: the daemon's configuration, ``neuroauth enroll``
    and the inlet (which matches it against every stream a lookup finds) all use it.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    name: str | None = Field(default=None, description="LSL stream name.")
    type: str | None = Field(default=None, description="LSL stream type, e.g. EEG.")
    source_id: str | None = Field(
        default=None, description="LSL source id (the most specific: survives renames)."
    )
    host: str | None = Field(
        default=None,
        description="Host name of the machine the stream comes from (LSL's hostname); with source_id, "
        "pins the headset's stream so that a stream from elsewhere cannot stand in for it.",
    )

    @field_validator("name", "type", "source_id", "host")
    @classmethod
    def _one_line(cls, value: str | None, info) -> str | None:
        if value == "":
            raise ValueError(f"stream {info.field_name} is empty; leave it out or give a value")
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError(
                f"stream {info.field_name} {value[:80]!r} contains a line break, which LSL cannot query"
            )
        if value is not None and has_control_character(value):
            raise ValueError(
                f"stream {info.field_name} {value[:80]!r} contains a control character, which LSL "
                "cannot query"
            )
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> StreamSelector:
        if self.name is None and self.type is None and self.source_id is None:
            raise ValueError("give at least one of name, type or source_id to pick the LSL stream")
        return self

    def _given(self) -> list[tuple[str, str]]:
        fields = (
            ("name", self.name),
            ("type", self.type),
            ("source_id", self.source_id),
            ("host", self.host),
        )
        return [(field, value) for field, value in fields if value is not None]

    def matches(self, info) -> bool:
        """Whether the stream described by ``info`` (a ``pylsl.StreamInfo``) is one this selects:
        every field given equals the stream's."""
        seen = {"name": info.name, "type": info.type, "source_id": info.source_id, "host": info.hostname}
        return all(seen[field]() == value for field, value in self._given())

    def __str__(self) -> str:
        return ", ".join(f"{field} {value!r}" for field, value in self._given())


class HeadsetSettings(_Section):
    """One headset: its stream, its owner, its topics."""

    device: str = Field(
        description="Identifier of the headset in topics (<prefix>/<device>/...): letters, digits, _ and -."
    )
    user: str = Field(description="The enrolled owner whose template this headset is checked against.")
    stream: StreamSelector = Field(
        default_factory=lambda: StreamSelector(type="EEG"),
        description="The LSL stream of this headset. Default: the stream of type EEG, which is "
        "enough for one headset; name several headsets' streams by name or source_id.",
    )
    resolve_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600.0,
        description="Seconds to look for the stream before retrying (and logging).",
    )

    @field_validator("device")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not _DEVICE_RE.fullmatch(value):
            raise ValueError(
                f"{value[:80]!r} is not a valid device id; use 1 to 64 letters, digits, '_' and '-'"
            )
        return value

    @field_validator("user")
    @classmethod
    def _user_name(cls, value: str) -> str:
        try:  # the one rule: what `neuroauth enroll` and the template store accept
            return validate_user(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Everything ``neuroauthd`` needs. Keyword arguments form the file layer: the environment wins."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    lsl: LslSettings = Field(default_factory=LslSettings, description="LSL stream discovery.")
    model: ModelSettings = Field(default_factory=ModelSettings, description="The model and its pace.")
    templates: TemplatesSettings = Field(default_factory=TemplatesSettings, description="Owner templates.")
    decision: DecisionSettings = Field(
        default_factory=DecisionSettings, description="Targets of the decision over time."
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="The MQTT broker.")
    headsets: list[HeadsetSettings] = Field(
        default_factory=list, description="The headsets this daemon serves (at least one)."
    )
    log_level: LogLevel = Field(default="INFO", description="Least severe log level written.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment first, so that it overrides the file passed in as keyword arguments.
        return (env_settings, init_settings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headsets")
    @classmethod
    def _headsets(cls, value: list[HeadsetSettings]) -> list[HeadsetSettings]:
        if not value:
            raise ValueError("no headset configured; add a [[headsets]] table with device, user and stream")
        first_device: dict[str, int] = {}
        first_stream: dict[tuple[str | None, ...], int] = {}
        problems = []
        for i, headset in enumerate(value):
            if headset.device in first_device:
                problems.append(
                    f"device {headset.device!r} of headsets[{i}] is already used by "
                    f"headsets[{first_device[headset.device]}]; each headset needs its own device id"
                )
            first_device.setdefault(headset.device, i)
            selector = (headset.stream.name, headset.stream.type, headset.stream.source_id)
            if selector in first_stream:
                problems.append(
                    f"headsets[{i}] selects the same LSL stream as headsets[{first_stream[selector]}]; "
                    "tell them apart with stream.name or stream.source_id"
                )
            first_stream.setdefault(selector, i)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def secret_password(self) -> str | None:
        """The MQTT broker password (environment or password file), or None."""
        return self.mqtt.secret_password()


def load_settings(path: Path | None = None) -> Settings:
    """Read ``path`` (TOML, optional) and the ``NEUROAUTH_*`` environment into one :class:`Settings`.

    Raises :class:`ConfigError` listing every problem by key path.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_toml(path)
        problems = [
            f"{_key_path((key,))}: unknown key (no setting starts with '_')"
            for key in data
            if key.startswith("_")
        ]
        mqtt = data.get("mqtt")
        if isinstance(mqtt, dict) and "password" in mqtt:
            problems.append(
                f"mqtt.password: a password does not belong in the config file {path}; set the "
                "environment variable NEUROAUTH_MQTT__PASSWORD or point mqtt.password_file at a "
                "file readable only by the service"
            )
        if problems:
            raise ConfigError(problems, path, data)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), path, data) from None
    except SettingsError as exc:  # an environment variable the settings source could not parse
        raise ConfigError(_unparsed_environment(exc), path, data) from None


def validate(path: Path | None = None) -> list[str]:
    """Every problem of the configuration in ``path`` plus the environment; empty when it is valid."""
    try:
        load_settings(path)
    except ConfigError as exc:
        return exc.errors
    return []


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: the configuration file does not exist"], path) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration file: {exc.strerror}"], path) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"], path) from None
    except RecursionError:
        raise ConfigError([f"{path}: nested too deeply to be a configuration"], path) from None
    except tomllib.TOMLDecodeError as exc:
        # The message carries the position, e.g. "... (at line 3, column 7)".
        raise ConfigError([f"{path}: invalid TOML: {exc}"], path) from None


def _describe(exc: ValidationError) -> list[str]:
    env = {name.upper(): name for name in os.environ}
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = _key_path(loc)
        kind = error["type"]
        message = error["msg"]
        if kind == "value_error":
            message = message.removeprefix("Value error, ")
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            message = "unknown key" + (f"; the keys here are {', '.join(allowed)}" if allowed else "")
        elif kind == "missing":
            message = "required, but not given"
        elif not any("password" in str(part) for part in loc) and _is_scalar(error.get("input")):
            message += f" (got {error['input']!r})"
        env_name = _env_source(loc, env)
        if env_name is not None:
            message += f" (from the environment variable {env_name})"
        lines.append(f"{key}: {message}")
    return lines


def _key_path(loc: tuple[Any, ...]) -> str:
    """``loc`` as ``mqtt.tls.ca_file``; a key with a character a terminal would act on is quoted."""
    parts = (str(part) if str(part).isprintable() else repr(str(part)) for part in loc)
    return ".".join(parts) or "(top level)"


def _unparsed_environment(exc: SettingsError) -> list[str]:
    """The ``NEUROAUTH_*`` variables that set a table or a list but do not hold JSON, the form the
    environment gives them in (the settings source stops at the first, naming only its section)."""
    problems = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        if not _takes_json(parts):
            continue
        try:
            json.loads(value)
        except ValueError as err:
            problems.append(
                f"{'.'.join(parts)}: the environment variable {name} is not JSON ({err}); a table or a "
                "list comes from the environment as JSON, e.g. NEUROAUTH_HEADSETS="
                '\'[{"device": "eeg1", "user": "alice"}]\''
            )
    return problems or [f"(environment): {exc}"]


def _takes_json(parts: list[str]) -> bool:
    """Whether the setting at key path ``parts`` is a table or a list (given as JSON in the environment)."""
    model: type[BaseModel] | None = Settings
    annotation: Any = None
    for part in parts:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return False
        annotation = field.annotation
        model = _model_in(annotation)
    return model is not None or typing.get_origin(annotation) is list


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and len(str(value)) <= 80


def _env_source(loc: tuple[Any, ...], env: dict[str, str]) -> str | None:
    """The environment variable that supplied the value at ``loc`` (or an enclosing table), if any."""
    for n in range(len(loc), 0, -1):
        parts = loc[:n]
        if not all(isinstance(p, str) for p in parts):
            continue
        name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts).upper()
        if name in env:
            return env[name]
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section at ``loc`` (list indices stepped over)."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
