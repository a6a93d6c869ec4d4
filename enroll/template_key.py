"""The installation key: templates are signed with it, so write access to them is not enough to forge one.

A template carries an HMAC-SHA256 of its content under a key of this installation
(32 random bytes, stored as 64 hexadecimal characters and a newline, mode 0600).
The first enrollment creates the key; every later one, and every reader of
templates, uses it. A template signed under another key (another machine, or a
forger who could write the templates directory but not read the key) is refused.

Where the key lives, first found wins:

1. ``$CREDENTIALS_DIRECTORY/template-key``: handed to the service by systemd
   (``LoadCredential=template-key:...``), so the service never reads it from disk;
2. ``$NEUROAUTH_TEMPLATES__KEY_FILE``, the configuration's ``[templates] key_file``;
3. ``template.key`` beside the templates directory, not inside it: an account that
   may write the templates must not be able to replace the key with its own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from ..errors import TemplateError

log = logging.getLogger(__name__)

CREDENTIAL = "template-key"  # the systemd credential's name
KEY_ENV = "NEUROAUTH_TEMPLATES__KEY_FILE"
KEY_BYTES = 32
_MAX_FILE_BYTES = 1024  # far more than 64 hexadecimal digits and a newline


def default_key_file(templates_dir: str | os.PathLike) -> Path:
    """Where the key of the templates in ``templates_dir`` is, unless configured (see the module doc)."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL).exists():
        return Path(credentials) / CREDENTIAL
    explicit = os.environ.get(KEY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(templates_dir).parent / "template.key"


def sign(key: bytes, content: str) -> str:
    """The hexadecimal HMAC-SHA256 of ``content`` under ``key``."""
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, content: str, signature: str) -> bool:
    """Whether ``signature`` is ``content``'s HMAC under ``key`` (compared in constant time)."""
    if not signature.isascii():  # compare_digest raises on other strings; no hex digest is one
        return False
    return hmac.compare_digest(sign(key, content), signature)


def load_key(path: str | os.PathLike) -> bytes:
    """The key in ``path``; a missing, unreadable, damaged or non-private key file is refused."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TemplateError(
            f"no installation key at {path}, so no template can be verified; the first "
            "`neuroauth enroll` creates it. Templates copied from another machine need that machine's "
            f"key too (or enroll again here). Set [templates] key_file if the key lives elsewhere."
        ) from None
    except OSError as exc:
        raise TemplateError(
            f"installation key {path} cannot be read ({exc.strerror}); it must be a plain file (not a "
            "symbolic link) owned by this account, mode 600"
        ) from None
    try:
        _check_key_file(path, os.fstat(fd))  # before fdopen, which raises on a directory
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_FILE_BYTES + 1)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise TemplateError(
            f"installation key {path} is damaged (not {2 * KEY_BYTES} hexadecimal digits); restore it "
            "from a backup, or remove it and enroll every owner again"
        )
    return key


def load_or_create_key(path: str | os.PathLike) -> bytes:
    """The key in ``path``, created (mode 0600) when there is none yet.

    The new key is written to a temporary file and linked into place, which fails if
    another enrollment created one meanwhile: that one is then used, never replaced.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        return load_key(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES).hex().encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            log.info("installation key created: %s (mode 600); templates are signed with it", path)
    finally:
        tmp.unlink(missing_ok=True)
    return load_key(path)


def _check_key_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TemplateError(f"installation key {path} is not a plain file; remove it and enroll again")
    if info.st_uid not in (os.getuid(), 0):
        raise TemplateError(
            f"installation key {path} belongs to another account (uid {info.st_uid}); refused. Give it to "
            f"this account: `chown {os.getuid()} {path}`"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise TemplateError(
            f"installation key {path} can be read or written by other accounts (mode {mode:o}), who "
            f"could forge templates with it; refused. Run `chmod 600 {path}`, and enroll every owner "
            "again if an untrusted account may have read it."
        )
    if info.st_size > _MAX_FILE_BYTES:
        raise TemplateError(f"installation key {path} holds {info.st_size} bytes; it is not a key")
