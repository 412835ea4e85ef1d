"""Temporary work folders, atomic publishing, and progress reporting.

Every artifact is built in a folder under the store's tmp dir named after
this process; it is renamed into place only when complete, so an interrupted
conversion leaves nothing half-written. Folders left by a process that died
are removed by the next conversion.
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(store) -> list[Path]:
    """Remove work folders of conversions whose process is gone; return them."""
    removed = []
    for d in store.tmp_dir().glob(PREFIX + "*"):
        try:
            pid = int(d.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
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
