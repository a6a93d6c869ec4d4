"""Atomic file replacement: a reader sees the old file or the new one, never a half of either.

The new content goes to a temporary file beside the target, ``.<name>.<random>.tmp``,
which is renamed over the target once complete. A writer holds an exclusive
``flock`` on its temporary file until the rename; the kernel releases it when the
process dies, so a temporary file that nobody holds locked was left by a writer
that was killed (SIGKILL, power loss) and is removed the next time the same
target is written (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

#: What :func:`tempfile.mkstemp` puts between the prefix and the suffix: no dots.
_RANDOM = r"[A-Za-z0-9_]+"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int | None = None) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    If anything fails (or the process is interrupted) before the rename, ``path``
    keeps its previous content and the temporary file is removed; if the process
    is killed outright, the next write of ``path`` removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    handle = os.fdopen(fd, "wb")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # held until closed: this temporary file is in use
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
        if mode is not None:
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        handle.close()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def temporary_target(name: str) -> str | None:
    """The target file name whose temporary file of :func:`atomic_write` is called ``name``, else None."""
    match = re.fullmatch(rf"\.(?P<target>.+)\.{_RANDOM}\.tmp", name)
    return match["target"] if match else None


def temporaries_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files of :func:`atomic_write` for ``path`` that exist now, finished or not."""
    path = Path(path)
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    return sorted(path.parent / name for name in names if temporary_target(name) == path.name)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` that no live writer holds; return those removed.

    A file that a writer has just created but not yet locked may be taken for a
    stale one; that writer's rename then fails and ``path`` keeps its content.
    """
    removed = []
    for tmp in temporaries_of(path):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue  # its writer finished or gave up meanwhile
        except OSError as exc:
            log.warning("cannot inspect %s, left by an interrupted write of %s: %s", tmp, path, exc.strerror)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            try:
                tmp.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning(
                    "cannot remove %s, left by an interrupted write of %s: %s", tmp, path, exc.strerror
                )
                continue
            log.info("removed %s, left by an interrupted write of %s", tmp, path)
            removed.append(tmp)
        finally:
            os.close(fd)
    return removed
