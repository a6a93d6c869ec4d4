"""How liblsl is configured: loopback-only by default.

liblsl reads its configuration once, the first time a process creates a stream
description (``StreamInfo``), an outlet, an inlet or a resolver. Importing
``pylsl``, ``local_clock()`` and ``library_info()`` do not read it. The sources,
first match wins: content given with ``lsl_set_config_content``, a file given
with ``lsl_set_config_filename``, the file named by the ``LSLAPICFG``
environment variable, ``lsl_api.cfg`` in the working directory, in
``~/lsl_api/`` and in ``/etc/lsl_api/``, then built-in defaults that multicast
on the local network. A file named by ``LSLAPICFG`` that cannot be read is
skipped (liblsl only logs it), so the next source wins silently.

:func:`configure_lsl` writes :data:`LOOPBACK_CONFIG` to a private file and points
``LSLAPICFG`` at it. An environment variable, unlike
``pylsl.set_config_content``, also reaches the processes this one starts
(:func:`loopback_env`) and works with every liblsl version. Both take effect
only before liblsl has read its configuration and are ignored silently after
that, so :func:`configure_lsl` must run before anything creates a stream
description, outlet, inlet or resolver.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import StreamError

log = logging.getLogger(__name__)

__all__ = ["LOOPBACK_CONFIG", "configure_lsl", "loopback_config_path", "loopback_env"]

#: liblsl configuration that keeps discovery and data on 127.0.0.1: no IPv6, no
#: multicast group beyond the loopback address, TTL 0, and the loopback address as
#: the only known peer. Discovery on 127.0.0.1 reaches only outlets on the ports of
#: [ports] PortRange (liblsl's default, 32, hides the 33rd and later stream of a machine):
#: 512 ports leave room for hundreds of headsets. liblsl logs errors only (level -2): its
#: INFO lines ("Configuration loaded from ...") would otherwise interleave with the daemon's log.
LOOPBACK_CONFIG = """[ports]
IPv6 = disable
PortRange = 512
[multicast]
ResolveScope = machine
AddressesOverride = {127.0.0.1}
TTLOverride = 0
[lab]
KnownPeers = {127.0.0.1}
[log]
level = -2
"""

ENV_VAR = "LSLAPICFG"
_FILE_NAME = "neuroauth-lsl-loopback.cfg"


def _private_dir() -> Path:
    """A directory only this user can write: ``$XDG_RUNTIME_DIR`` or one under the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime)
    uid = os.getuid() if hasattr(os, "getuid") else None
    directory = Path(tempfile.gettempdir()) / f"neuroauth-{uid if uid is not None else 'user'}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StreamError(
            f"cannot create {directory} for the LSL configuration ({exc}); set {ENV_VAR} to a "
            "readable configuration file instead"
        ) from None
    info = directory.lstat()
    foreign = uid is not None and info.st_uid != uid
    if not stat.S_ISDIR(info.st_mode) or foreign or (uid is not None and info.st_mode & 0o022):
        raise StreamError(
            f"{directory} is not a private directory of this user, so the LSL configuration "
            f"cannot be written there safely; remove it, or set {ENV_VAR} to a configuration file"
        )
    return directory


def loopback_config_path() -> Path:
    """The file holding :data:`LOOPBACK_CONFIG`, written (atomically) when absent or different."""
    path = _private_dir() / _FILE_NAME
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != LOOPBACK_CONFIG:
        atomic_write_text(path, LOOPBACK_CONFIG)
    return path


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise StreamError(
            f"{ENV_VAR} names {path}, which cannot be read ({exc.strerror}); liblsl would ignore it "
            "and fall back to a configuration that may multicast on the network. Fix the path, or "
            f"unset {ENV_VAR} to use NeuroAuth's loopback-only configuration."
        ) from None


def configure_lsl(loopback_only: bool) -> None:
    """Configure liblsl for this process; call it before any other LSL call.

    With ``loopback_only``, streams are discovered and served on 127.0.0.1 only.
    A configuration file already named by ``LSLAPICFG`` in the environment is
    respected (and must be readable); otherwise ``LSLAPICFG`` is pointed at
    :func:`loopback_config_path`. Without ``loopback_only``, liblsl's own lookup
    is left alone (``LSLAPICFG``, ``lsl_api.cfg``, or its defaults, which
    multicast on the local network).
    """
    configured = os.environ.get(ENV_VAR)
    if configured:
        if loopback_only:
            _check_readable(configured)
        log.info("LSL configuration from %s=%s (set by the environment)", ENV_VAR, configured)
        return
    if not loopback_only:
        log.info("LSL configuration left to liblsl: streams may be discovered on the local network")
        return
    path = loopback_config_path()
    os.environ[ENV_VAR] = str(path)
    log.info("LSL restricted to 127.0.0.1 (%s=%s)", ENV_VAR, path)


def loopback_env(base_env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``base_env`` for a child process that must stay loopback-only.

    An ``LSLAPICFG`` already in ``base_env`` is kept (as :func:`configure_lsl`
    keeps it); otherwise it is set to :func:`loopback_config_path`.
    """
    env = dict(base_env)
    if env.get(ENV_VAR):
        _check_readable(env[ENV_VAR])
    else:
        env[ENV_VAR] = str(loopback_config_path())
    return env
