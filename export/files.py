"""Exported folders must be readable by whoever serves them (e.g. a container user reading a read-only mount):
mkdtemp makes 0700 folders and safetensors writes 0600 files, so give the tree the modes a plain open() would."""

from __future__ import annotations

import os
from pathlib import Path


def make_readable(folder: str | Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
