"""What a person sees of an extraction: a progress bar and the summary, while the
engine's own output (Ray's and Ray Data's logs, warnings, worker lines, native
log lines) goes to a log file in the Ray session's folder.

Ray writes to the process's file descriptors 1 and 2 from Python and from C++,
so the quiet mode redirects those descriptors, not ``sys.stdout``: nothing the
engine prints can reach the terminal, and nothing of it is lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator

import ray

__all__ = ["Console", "ProgressCounter", "ProgressBar", "quiet_console"]

LOG_NAME = "featstore-extract-driver.log"


class Console:
    """The terminal of a job whose engine output may be redirected: ``out`` and
    ``err`` write to it; ``log_path`` is where the engine's output went (None when
    not redirected)."""

    def __init__(self, out: IO[str], err: IO[str], redirect: _FdRedirect | None = None) -> None:
        self.out, self.err, self._redirect = out, err, redirect

    @property
    def log_path(self) -> Path | None:
        return None if self._redirect is None else self._redirect.path

    def print(self, *args: object) -> None:
        print(*args, file=self.out, flush=True)

    def error(self, *args: object) -> None:
        print(*args, file=self.err, flush=True)

    def move_log(self, folder: str | os.PathLike) -> None:
        """Move the engine log into ``folder`` (the Ray session's logs), keeping what it holds."""
        if self._redirect is not None:
            self._redirect.move(Path(folder) / LOG_NAME)


class _FdRedirect:
    """File descriptors 1 and 2 pointed at a log file, the originals kept."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="featstore-extract-", suffix=".log")
        os.close(fd)
        self.path = Path(name)
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        self._point(self.path)

    def _point(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def move(self, target: Path) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, target)
        self._point(target)
        self.path.unlink(missing_ok=True)
        self.path = target

    def restore(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)


@contextlib.contextmanager
def quiet_console(verbose: bool) -> Iterator[Console]:
    """A Console for the block: with ``verbose`` the engine prints as usual; without,
    descriptors 1 and 2 go to a log file until the block ends."""
    if verbose:
        yield Console(sys.stdout, sys.stderr)
        return
    redirect = _FdRedirect()
    out = os.fdopen(os.dup(redirect.saved[0]), "w", buffering=1)
    err = os.fdopen(os.dup(redirect.saved[1]), "w", buffering=1)
    try:
        yield Console(out, err, redirect)
    finally:
        redirect.restore()
        out.close()
        err.close()


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Units and clips committed so far, reported by the sink after each unit's commit."""

    def __init__(self) -> None:
        self.units = 0
        self.clips = 0

    def add(self, clips: int) -> None:
        self.units += 1
        self.clips += clips

    def snapshot(self) -> tuple[int, int]:
        return self.units, self.clips


class ProgressBar:
    """A one-line bar (units and clips done, clips/s, ETA), redrawn from a background
    thread that polls a ProgressCounter; on a non-terminal it prints a line at each
    tenth of the work instead of redrawing."""

    def __init__(
        self,
        counter: ray.actor.ActorHandle,
        units: int,
        clips: int,
        out: IO[str],
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.5,
    ) -> None:
        self.counter, self.units, self.clips, self.out = counter, units, clips, out
        self.clock, self.interval = clock, interval
        self.tty = out.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="featstore-progress", daemon=True)
        self._t0 = clock()
        self._last_decile, self._last_units = -1, -1

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._draw(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw(final=False)

    def line(self, units: int, clips: int) -> str:
        """The bar's text for ``units`` and ``clips`` done."""
        elapsed = max(self.clock() - self._t0, 1e-9)
        rate = clips / elapsed
        left = (self.clips - clips) / rate if rate > 0 else None
        eta = "--:--" if left is None else time.strftime("%M:%S", time.gmtime(left))
        width = 24
        done = int(width * units / self.units) if self.units else width
        return (
            f"extract [{'#' * done}{'.' * (width - done)}] units {units}/{self.units}  "
            f"clips {clips}/{self.clips}  {rate:.2f} clips/s  ETA {eta}"
        )

    def _draw(self, final: bool) -> None:
        try:
            units, clips = ray.get(self.counter.snapshot.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):  # the bar must never break the job
            return
        text = self.line(units, clips)
        if self.tty:
            self.out.write("\r" + text + ("\n" if final else ""))
        else:
            decile = 10 * units // self.units if self.units else 10
            if decile <= self._last_decile and not (final and units != self._last_units):
                return
            self._last_decile, self._last_units = decile, units
            self.out.write(text + "\n")
        self.out.flush()
