"""``neuroauthd``: the continuous-authentication service.

    neuroauthd [--config FILE] [--validate-config]

The configuration is a TOML file (``--config``, else ``$NEUROAUTH_CONFIG``, else
``/etc/neuroauth/neuroauthd.toml`` when it exists) plus ``NEUROAUTH_*`` environment
variables. ``--validate-config`` checks it (and that the checkpoint and every
owner's template load) without starting, printing each problem by key path.

SIGTERM and SIGINT stop the service the same way: ``offline`` is published on
the status topic, the inlets are closed, and the exit status is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ..config import ConfigError, Settings, load_settings
from ..errors import NeuroAuthError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/neuroauth/neuroauthd.toml")


def config_path(given: Path | None) -> Path | None:
    if given is not None:
        return given
    if os.environ.get("NEUROAUTH_CONFIG"):
        return Path(os.environ["NEUROAUTH_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_parts(settings: Settings):
    """The model and every headset owner's template; raises :class:`ConfigError` by key path."""
    from ..enroll.store import TemplateStore
    from ..models.checkpoint import load_checkpoint
    from ..paths import SHIPPED_CHECKPOINT

    problems = []
    try:
        model = load_checkpoint(settings.model.checkpoint or SHIPPED_CHECKPOINT)
    except NeuroAuthError as exc:
        raise ConfigError([f"model.checkpoint: {exc}"]) from None
    store = TemplateStore(settings.templates.directory)
    identity = model.identity()
    templates = {}
    for i, headset in enumerate(settings.headsets):
        try:
            templates[headset.user] = store.load(headset.user, expected_identity=identity)
        except NeuroAuthError as exc:
            problems.append(f"headsets[{i}].user: {exc}")
    if problems:
        raise ConfigError(problems)
    return model, templates


def validate_main(path: Path | None) -> int:
    try:
        settings = load_settings(path)
        load_parts(settings)
    except ConfigError as exc:
        print(f"neuroauthd: {exc}", file=sys.stderr)
        return 2
    heads = ", ".join(f"{h.device} (owner {h.user})" for h in settings.headsets)
    print(f"neuroauthd: the configuration{f' in {path}' if path else ''} is valid: {heads}")
    return 0


async def serve(settings: Settings) -> None:
    """Run the service until SIGTERM or SIGINT."""
    from .service import Service

    model, templates = load_parts(settings)
    service = Service(settings, model, templates)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt = settings.mqtt
    log.info("neuroauthd starting: %d headset(s), broker %s:%d", len(settings.headsets), mqtt.host, mqtt.port)
    await service.run(stop)
    log.info("neuroauthd stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuroauthd", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--validate-config", action="store_true", help="check the configuration and exit")
    args = parser.parse_args(argv)
    path = config_path(args.config)
    if args.validate_config:
        return validate_main(path)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"neuroauthd: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from .lslconfig import configure_lsl

    configure_lsl(settings.lsl.loopback_only)  # before any other LSL call
    try:
        asyncio.run(serve(settings))
    except NeuroAuthError as exc:
        print(f"neuroauthd: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
