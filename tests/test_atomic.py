from __future__ import annotations

import pytest

from neuroauth.atomic import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write_text(target, "good")

    def half_then_fail(handle):
        handle.write(b"half of a new ")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_mode_is_applied(tmp_path):
    target = tmp_path / "secret"
    atomic_write(target, lambda h: h.write(b"x"), mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600
