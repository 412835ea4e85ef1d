"""Temporary work folders, atomic publishing, and progress reporting.

Every artifact is built in a folder under the store's tmp dir named after
this process; it is renamed into place only when complete, so an interrupted
conversion leaves nothing half-written. At the start of a conversion, folders
left by a process that died, and anything in the tmp dir untouched for an
hour, are removed; `edge doctor` reports what the tmp dir holds (Store.tmp_usage).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from edge.errors import ConversionError

PREFIX = "convert-"
MAX_AGE_S = 3600  # leftovers older than this go, whoever left them


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _newest_mtime(path: Path) -> float:
    """The latest modification time in a tree (a live conversion keeps writing into its folder)."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return time.time()
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(store, max_age_s: float = MAX_AGE_S, now: float | None = None) -> list[Path]:
    """Remove work folders of conversions whose process is gone, and any entry of the tmp dir
    untouched for `max_age_s`, except this process's own; return what was removed."""
    now = time.time() if now is None else now
    removed = []
    for d in sorted(store.tmp_dir().iterdir()):
        pid = None
        if d.name.startswith(PREFIX):
            try:
                pid = int(d.name[len(PREFIX):].split("-", 1)[0])
            except ValueError:
                pass
        if pid == os.getpid():
            continue
        dead = pid is not None and not _alive(pid)
        if dead or now - _newest_mtime(d) > max_age_s:
            _remove(d)
            removed.append(d)
    return removed


@contextmanager
def work_dir(store, label: str):
    """A fresh folder under the store's tmp dir, removed on exit unless it was published."""
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{label}-", dir=store.tmp_dir()))
    try:
        yield d
    finally:
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)


def publish(tmp: Path, final: Path, force: bool) -> None:
    """Move a finished folder into place; with force, replace what was there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        if not force:
            raise ConversionError(f"{final} already exists.", "Pass --force to replace it.")
        old = tmp.parent / f"{tmp.name}.old"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def null_step(label: str):
    yield


@contextmanager
def no_tqdm():
    """Libraries that draw their own tqdm bars (GGUF writer, GGUF loader) stay quiet under ours."""
    try:
        from tqdm import std
    except ImportError:
        yield
        return
    # TQDM_DISABLE is read once at import, so switch the class default instead.
    original = std.tqdm.__init__

    def quiet(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = quiet
    try:
        yield
    finally:
        std.tqdm.__init__ = original


class Reporter:
    """Progress on stderr with rich: one line per step, with a spinner and the time taken."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def _start(self):
        # Started at the first step, so a run that fails early prints nothing extra.
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self._progress.__enter__()

    @contextmanager
    def step(self, label: str):
        if not self.enabled:
            yield
            return
        if self._progress is None:
            self._start()
        task = self._progress.add_task(label, total=1)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            self._progress.update(task, description=f"[red]{label} (failed)")
            self._progress.stop_task(task)
            raise
        self._progress.update(task, completed=1, description=f"{label} [dim]{time.perf_counter() - t0:.1f}s")
