"""``neuroauthd``: the continuous-authentication service.

    neuroauthd [--config FILE] [--validate-config]

The configuration is a TOML file (``--config``, else ``$NEUROAUTH_CONFIG``, else
``/etc/neuroauth/neuroauthd.toml`` when it exists) plus ``NEUROAUTH_*`` environment
variables. ``--validate-config`` checks it (and that the checkpoint and every
owner's template load) without starting, printing each problem by key path.

SIGTERM and SIGINT stop the service the same way: every headset is set to
``NO_SIGNAL`` (locked, with a ``lock`` event for one that was ``OWNER``), then
``offline`` is published on the status topic, the inlets are closed, and the exit
status is 0. SIGHUP stops it the same way with status 75, so that systemd
(``Restart=always``) starts it again with the configuration on disk. A stop signal
that comes while the service is still starting is held and acted on as soon as it
can publish. An error nothing handles also locks every headset and publishes
``offline``, then exits with status 70 for systemd to restart it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NeuroAuthError

if TYPE_CHECKING:  # the settings load after the stop signals are held (see main)
    from ..config import ConfigError, Settings

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/neuroauth/neuroauthd.toml")


def config_path(given: Path | None) -> Path | None:
    if given is not None:
        return given
    if os.environ.get("NEUROAUTH_CONFIG"):
        return Path(os.environ["NEUROAUTH_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def check_parts(
    checkpoint: Path | None,
    templates_dir: Path | None,
    users: list[tuple[int, str]],
    key_file: Path | None = None,
    hop_seconds: float | None = None,
) -> tuple[object | None, dict, list[str]]:
    """Load the model and each headset's template; the problems by key path instead of raising."""
    from ..enroll.store import TemplateStore
    from ..models.checkpoint import load_checkpoint
    from ..paths import SHIPPED_CHECKPOINT

    problems, templates, model, identity = [], {}, None, None
    try:
        model = load_checkpoint(checkpoint or SHIPPED_CHECKPOINT)
        identity = model.identity()
    except NeuroAuthError as exc:
        problems.append(f"model.checkpoint: {exc}")
    if model is not None and hop_seconds is not None:
        samples = hop_seconds * model.spec.sfreq
        if abs(samples - round(samples)) > 1e-9:
            problems.append(
                f"model.hop_seconds: {hop_seconds:g} s is {samples:g} samples at the checkpoint's "
                f"{model.spec.sfreq:g} Hz; give a whole number of samples (a multiple of "
                f"{1 / model.spec.sfreq:g} s)"
            )
    if templates_dir is None:
        return model, templates, problems
    store = TemplateStore(templates_dir, key_file)
    for i, user in users:
        try:
            template = store.load(user, expected_identity=identity)
        except NeuroAuthError as exc:
            problems.append(f"headsets.{i}.user: {exc}")
            continue
        if model is not None and template.dim != model.embedder.dim:  # its identity string is no proof
            problems.append(
                f"headsets.{i}.user: the template {store.path(user)} holds {template.dim}-d embeddings but "
                f"the checkpoint's embedder makes {model.embedder.dim}-d ones; enroll again "
                f"(`neuroauth enroll --user {user}`)"
            )
            continue
        templates[user] = template
    return model, templates, problems


def load_parts(settings: Settings, path: Path | None = None):
    """The model and every headset owner's template; raises :class:`ConfigError` by key path."""
    from ..config import ConfigError

    users = [(i, h.user) for i, h in enumerate(settings.headsets)]
    model, templates, problems = check_parts(
        settings.model.checkpoint,
        settings.templates.directory,
        users,
        settings.templates.key_file,
        settings.model.hop_seconds,
    )
    if problems:
        raise ConfigError(problems, path)
    return model, templates


def mamba_path(model) -> str:
    """How the model's Mamba block runs, in one line for the log: the pure-PyTorch scan or the CUDA
    kernels of the gpu extra, and why."""
    from ..models.ssm import scan_path

    if model.denoiser.mamba is None:
        return "Mamba: none in this checkpoint's denoiser"
    return str(scan_path(next(model.denoiser.parameters()).device))


def _parts_of_a_broken_config(error: ConfigError) -> tuple[Path | None, Path, list[tuple[int, str]]]:
    """Checkpoint, template directory and owners as far as a configuration that failed to
    validate still names them (what the loader read, ``error.data``), so that their problems are
    reported along with its own."""
    from ..enroll.store import TEMPLATES_ENV, default_templates_dir
    from ..enroll.template import validate_user

    data = error.data
    model, templates = data.get("model", {}), data.get("templates", {})
    checkpoint = model.get("checkpoint") if isinstance(model, dict) else None
    directory = os.environ.get(TEMPLATES_ENV) or (  # the environment wins, as in the settings
        templates.get("directory") if isinstance(templates, dict) else None
    )
    users = []
    for i, headset in enumerate(data.get("headsets", []) if isinstance(data.get("headsets"), list) else []):
        user = headset.get("user") if isinstance(headset, dict) else None
        try:
            users.append((i, validate_user(user)))
        except (NeuroAuthError, TypeError):
            continue  # a malformed user is already among the configuration's own problems
    checkpoint_path = _usable_path(checkpoint)
    try:
        if checkpoint_path is not None and not checkpoint_path.is_file():
            checkpoint_path = None  # reported by the configuration's own check
    except OSError:
        checkpoint_path = None
    if directory is None:
        return checkpoint_path, default_templates_dir(), users
    templates_path = _usable_path(directory)
    if templates_path is None:  # the configuration's own check names it; no template can be looked for
        return checkpoint_path, None, []
    return checkpoint_path, templates_path, users


def _usable_path(value: object) -> Path | None:
    """``value`` as a path the templates or checkpoint could be at, None when it cannot be one (not a
    string, a control character, a name longer than a file system takes, a home that does not exist):
    the configuration's own check reports it, and nothing is looked up there."""
    if not isinstance(value, str) or not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    if any(len(part.encode()) > 255 for part in value.split("/")):
        return None
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~user of an account that does not exist
        return None


def validate_main(path: Path | None) -> int:
    """``--validate-config``: every problem of the file, the environment, the model and the templates."""
    from ..config import ConfigError, load_settings

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        # the owners' templates are checked as far as the broken configuration names them
        problems = exc.errors + check_parts(*_parts_of_a_broken_config(exc))[2]
    else:
        users = [(i, h.user) for i, h in enumerate(settings.headsets)]
        problems = check_parts(
            settings.model.checkpoint,
            settings.templates.directory,
            users,
            settings.templates.key_file,
            settings.model.hop_seconds,
        )[2]
    if problems:
        print(f"neuroauthd: {ConfigError(problems, path)}", file=sys.stderr)
        return 2
    heads = ", ".join(f"{h.device} (owner {h.user})" for h in settings.headsets)
    print(f"neuroauthd: the configuration{f' in {path}' if path else ''} is valid: {heads}")
    return 0


RESTART_STATUS = 75  # EX_TEMPFAIL: stopped cleanly on SIGHUP, to be started again by systemd
FATAL_STATUS = 70  # EX_SOFTWARE: an error nothing in the service handles; systemd starts it again
TORCH_THREADS = 1  # intra-op threads of the model's steps
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_early_signals: list[int] = []


def _hold_stop_signals() -> None:
    """Until the event loop takes them over, note stop signals instead of dying of them: a SIGTERM
    in the first moments stops the service as cleanly as a later one (headsets locked, offline)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: _early_signals.append(signum))


async def serve(settings: Settings, path: Path | None = None) -> int:
    """Run the service until SIGTERM, SIGINT or SIGHUP (also when they come while the model loads);
    the exit status: 0, or :data:`RESTART_STATUS` after SIGHUP."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    for sig in _early_signals:  # came while Python started and the configuration loaded
        on_signal(sig)
    import torch

    from .service import Service

    # The pump steps the model in one thread; parallel kernels inside its small steps cost more than
    # they give (measured: several times slower with 2 threads on a 2-core machine that is busy).
    torch.set_num_threads(TORCH_THREADS)
    model, templates = load_parts(settings, path)
    log.info("%s", mamba_path(model))
    service = Service(settings, model, templates)
    mqtt = settings.mqtt
    log.info("neuroauthd starting: %d headset(s), broker %s:%d", len(settings.headsets), mqtt.host, mqtt.port)
    await service.run(stop)
    if received and received[0] == signal.SIGHUP:
        log.warning(
            "stopped on SIGHUP, every headset locked; exiting with status %d so that systemd starts it "
            "again with the configuration and templates on disk (a running daemon does not reload)",
            RESTART_STATUS,
        )
        return RESTART_STATUS
    log.info("neuroauthd stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuroauthd", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--validate-config", action="store_true", help="check the configuration and exit")
    args = parser.parse_args(argv)
    path = config_path(args.config)
    if args.validate_config:
        return validate_main(path)
    _hold_stop_signals()
    from ..config import ConfigError, load_settings

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"neuroauthd: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from .lslconfig import configure_lsl
    from .memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: memory stays flat over a long run

    configure_lsl(settings.lsl.loopback_only)  # before any other LSL call
    try:
        import asyncio

        return asyncio.run(serve(settings, path))
    except NeuroAuthError as exc:
        print(f"neuroauthd: {exc}", file=sys.stderr)
        return 2
    except Exception:  # by then every headset was published locked and `offline` sent
        log.critical(
            "neuroauthd stopped on an unexpected error; exiting with status %d", FATAL_STATUS, exc_info=True
        )
        return FATAL_STATUS


if __name__ == "__main__":
    sys.exit(main())
