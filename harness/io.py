"""Atomic file and folder writes: a reader never sees a half-written result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


def now_iso() -> str:
    """UTC now, to the second, ISO 8601: the one timestamp format of every record the harness writes."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_jsonl(path: str | Path, rows, default=None) -> None:
    """One JSON object per line (UTF-8, non-ASCII kept); `default` serialises what json cannot."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=default) + "\n")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _umask_mode() -> int:
    return 0o666 & ~_umask()


def make_readable(folder: str | Path) -> None:
    """Give a tree the modes a plain mkdir/open() would: mkdtemp makes 0700 folders and safetensors (like mkstemp)
    writes 0600 files, and results must be readable by whoever serves them (the Docker image's own user reads the
    base model prepared at build time by root, and runs/ mounted read-only)."""
    umask = _umask()
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


@contextmanager
def atomic_open(path: str | Path, newline: str | None = None):
    """Yield a text file that replaces `path` in one rename once the block ends without error (fsynced first);
    on error the temp file goes and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (a container reading a mounted
        # runs/ folder as another user must be able to read the records).
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj) -> Path:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    return Path(path)


@contextmanager
def atomic_dir(final: str | Path):
    """Yield a temp dir next to `final`; on success it replaces `final` in one rename, with the modes a plain
    mkdir/open() would have given (see make_readable)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        make_readable(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(
    path: str | Path, required_strings: tuple[str, ...] = (), error: type[Exception] = ValueError
) -> list[dict]:
    """One JSON object per line; a bad line raises `error` naming the file, line and field."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{lineno}: expected a JSON object")
            for key in required_strings:
                if not isinstance(row.get(key), str):
                    raise error(f"{path}:{lineno}: field {key!r} missing or not a string")
            rows.append(row)
    return rows


def cache_dir(kind: str) -> Path:
    """A folder under the musicprod cache ($MUSICPROD_CACHE, default ~/.cache/musicprod): eval-cache, coverage."""
    return Path(os.path.expanduser(os.environ.get("MUSICPROD_CACHE", "~/.cache/musicprod"))) / kind


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
