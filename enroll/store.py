"""The directory of owner templates: one file per user, private to the service's account.

Files are ``<user>.template.json`` (format in :mod:`neuroauth.enroll.template`),
written atomically with mode 0600 in a directory of mode 0700: a reader sees the
previous template or the new one, never a half, and no other account can read
anyone's biometric data. The temporary file of a write that was killed
(``.<user>.template.json.<random>.tmp``) is removed when that user's template is
next saved, and by :meth:`TemplateStore.list`.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write, remove_stale_temporaries, temporary_target
from ..errors import TemplateError
from .template import Template, validate_user
from .template_key import default_key_file, load_key, load_or_create_key

log = logging.getLogger(__name__)

SUFFIX = ".template.json"
MAX_TEMPLATE_BYTES = 16 * 2**20  # a template is tens to hundreds of kB; anything far larger is not one


TEMPLATES_ENV = "NEUROAUTH_TEMPLATES__DIRECTORY"  # the settings tree's [templates] directory


def default_templates_dir() -> Path:
    """Where templates live unless told: ``$NEUROAUTH_TEMPLATES__DIRECTORY`` (the environment form of the
    configuration's ``[templates] directory``), else ``$STATE_DIRECTORY/templates`` (systemd), else
    ``~/.local/share/neuroauth/templates``. The daemon's configuration, ``neuroauth enroll`` and
    ``neuroauth templates`` all take it from here."""
    explicit = os.environ.get(TEMPLATES_ENV)
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]  # colon-separated when a unit lists several
    if state:
        return Path(state) / "templates"
    return Path("~/.local/share/neuroauth/templates").expanduser()


@dataclass(frozen=True)
class TemplateSummary:
    """One entry of :meth:`TemplateStore.list`; ``problem`` is set when the file cannot be used."""

    user: str
    path: Path
    created: str | None = None
    checkpoint_identity: str | None = None
    embedder: str | None = None
    dim: int | None = None
    n_windows: int | None = None
    problem: str | None = None

    @property
    def damaged(self) -> bool:
        return self.problem is not None


class TemplateStore:
    """Templates under one directory, signed with the installation key in ``key_file`` (default:
    :func:`~neuroauth.enroll.template_key.default_key_file`); user names are validated so no path
    leaves the directory. Saving creates the key when there is none; loading requires it."""

    def __init__(self, directory: str | os.PathLike, key_file: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory)
        self.key_file = Path(key_file) if key_file is not None else default_key_file(self.directory)

    def path(self, user: str) -> Path:
        return self.directory / f"{validate_user(user)}{SUFFIX}"

    def save(self, template: Template) -> Path:
        """Write (or replace) the template of ``template.user`` atomically, mode 0600."""
        path = self.path(template.user)
        data = template.to_bytes(load_or_create_key(self.key_file))
        self._ensure_directory()
        atomic_write(path, lambda handle: handle.write(data), mode=0o600)
        log.info("template of %s written to %s", template.user, path)
        return path

    def load(self, user: str, expected_identity: str | None = None) -> Template:
        """The template of ``user``; with ``expected_identity``, refuse one made with another checkpoint.

        Like ssh's StrictModes, a directory or template that another account could write is
        refused (whoever can write there could swap in their own template), and so is anything
        that is not a plain file of a template's size: a symbolic link, a FIFO, a device.
        """
        path = self.path(user)
        _check_private(self.directory, "template directory")
        data = _read_plain_file(path, user)
        template = Template.from_bytes(data, str(path), load_key(self.key_file), user)
        if template.user != user:
            raise TemplateError(
                f"template {path} belongs to user {template.user!r}, not {user!r}: it was renamed or "
                f"copied. Remove it and enroll again (`neuroauth enroll --user {user}`)."
            )
        if expected_identity is not None and template.checkpoint_identity != expected_identity:
            raise TemplateError(
                f"template {path} was made with checkpoint {template.checkpoint_identity}, but the "
                f"checkpoint in use is {expected_identity}; its scores would mean nothing. Enroll again "
                f"with this checkpoint (`neuroauth enroll --user {user}`)."
            )
        return template

    def list(self) -> list[TemplateSummary]:
        """Every template file in the directory, sorted by user; damaged ones carry their problem."""
        if not self.directory.is_dir():
            return []
        self._remove_stale_temporaries()
        out = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            user = path.name[: -len(SUFFIX)]
            try:
                template = self.load(user)
            except TemplateError as exc:
                out.append(TemplateSummary(user=user, path=path, problem=str(exc)))
                continue
            out.append(
                TemplateSummary(
                    user=user,
                    path=path,
                    created=template.created,
                    checkpoint_identity=template.checkpoint_identity,
                    embedder=template.embedder,
                    dim=template.dim,
                    n_windows=template.n_windows,
                )
            )
        return out

    def remove(self, user: str) -> Path:
        """Delete the template of ``user``."""
        path = self.path(user)
        try:
            path.unlink()
        except FileNotFoundError:
            raise TemplateError(
                f"no template for user {user!r} in {self.directory}; `neuroauth templates list` shows "
                "who is enrolled"
            ) from None
        log.info("template of %s removed (%s)", user, path)
        return path

    def _remove_stale_temporaries(self) -> None:
        """Remove what writes killed before their rename left behind (biometric data, half written)."""
        targets = {temporary_target(path.name) for path in self.directory.glob(f".*{SUFFIX}.*.tmp")}
        for target in sorted(t for t in targets if t is not None and t.endswith(SUFFIX)):
            remove_stale_temporaries(self.directory / target)

    def _ensure_directory(self) -> None:
        if self.directory.exists():
            _check_private(self.directory, "template directory")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode & 0o077:
            try:
                os.chmod(self.directory, 0o700)
            except OSError as exc:
                log.warning(
                    "template directory %s is accessible to other accounts (mode %o) and could not be "
                    "made private (%s); run `chmod 700 %s`",
                    self.directory,
                    mode,
                    exc,
                    self.directory,
                )
            else:
                log.info("template directory %s made private (mode %o -> 700)", self.directory, mode)


def _fix_owner(path: Path) -> str:
    return f"`chown {os.getuid()} {path}` (this account)" if hasattr(os, "getuid") else ""


def _check_private(path: Path, what: str, info: os.stat_result | None = None) -> None:
    """Refuse ``path`` when an account other than this one (or root) owns it or can write it."""
    try:
        info = info or os.stat(path)
    except FileNotFoundError:
        return  # a missing directory holds no template: the caller says so
    except OSError as exc:
        raise TemplateError(f"{what} {path} cannot be checked ({exc.strerror})") from None
    uid = os.getuid()
    if info.st_uid not in (uid, 0):
        raise TemplateError(
            f"{what} {path} belongs to another account (uid {info.st_uid}), which could replace the "
            f"templates in it; refused. Give it to this account: {_fix_owner(path)}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise TemplateError(
            f"{what} {path} can be written by other accounts (mode {mode:o}), who could swap in a "
            f"template of their own; refused. Run `chmod go-w {path}` (templates: `chmod 600`, "
            "their directory: `chmod 700`)."
        )


def _read_plain_file(path: Path, user: str) -> bytes:
    """The bytes of the template file ``path``: a plain file, not a link, private, of a template's size."""
    try:
        # O_NOFOLLOW: a symbolic link is refused, not followed; O_NONBLOCK: opening a FIFO does not hang
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TemplateError(
            f"no template for user {user!r} (looked for {path}); enroll them first with "
            f"`neuroauth enroll --user {user}`"
        ) from None
    except OSError as exc:
        if path.is_symlink():
            raise TemplateError(
                f"template {path} is a symbolic link; templates must be plain files. Remove it and enroll "
                f"again (`neuroauth enroll --user {user}`)."
            ) from None
        raise TemplateError(
            f"template {path} cannot be read ({exc.strerror}); check that this account owns "
            f"{path.parent} and its files"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # before fdopen, which raises on a directory
        os.close(fd)
        raise TemplateError(
            f"template {path} is not a plain file; remove it and enroll again "
            f"(`neuroauth enroll --user {user}`)"
        )
    with os.fdopen(fd, "rb") as handle:
        _check_private(path, "template", info)
        if info.st_size > MAX_TEMPLATE_BYTES:
            raise TemplateError(
                f"template {path} holds {info.st_size} bytes, far more than a template "
                f"(at most {MAX_TEMPLATE_BYTES}); it is not one. Remove it and enroll again "
                f"(`neuroauth enroll --user {user}`)."
            )
        data = handle.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:  # it grew while being read
        raise TemplateError(
            f"template {path} grew beyond {MAX_TEMPLATE_BYTES} bytes while being read; refused"
        )
    return data
