"""Atomic file writes: a file is either its old content or its new, never half of one.

Every writer of a cache, manifest or state file goes through here: the data goes
to a temporary file in the same folder, which is renamed over the target only
when it is complete; on any error the temporary file is removed.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` when the block ends cleanly.

    `suffix` ends the temporary name, for writers that infer a format from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | Path, data: str | bytes, mode: int | None = None) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically and return the path."""
    with atomic_path(path, mode) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
