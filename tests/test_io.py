"""Atomic writes: nothing half-written, and results readable by another user (a container serving them)."""

import os
import stat

import pytest

from harness.io import atomic_dir


def test_atomic_dir_gives_plain_modes_and_replaces_in_one_rename(tmp_path):
    """mkdtemp makes 0700 folders and safetensors writes 0600 files: the Docker image's user could not read the
    base model prepared at build time (found by server/docker-smoke.sh). The finished folder has umask modes."""
    old = os.umask(0o022)
    try:
        final = tmp_path / "model"
        with atomic_dir(final) as tmp:
            (tmp / "sub").mkdir(mode=0o700)
            secret = tmp / "sub" / "weights.safetensors"
            secret.write_bytes(b"x")
            secret.chmod(0o600)
            assert not final.exists()  # invisible until the block ends
        assert stat.S_IMODE(final.stat().st_mode) == 0o755
        assert stat.S_IMODE((final / "sub").stat().st_mode) == 0o755
        assert stat.S_IMODE((final / "sub" / "weights.safetensors").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_atomic_dir_leaves_the_old_folder_on_failure(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("conversion died")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folder left
    assert [p.name for p in final.iterdir()] == ["old.txt"]
