"""Fault injection for tests and drills: kill this process at a named point.

Off unless ``FEATSTORE_FAULT`` is set, e.g. ``FEATSTORE_FAULT=write_unit.after_data@3``
makes the process SIGKILL itself right after it wrote unit 3's data chunk and
before that unit's commit flags. With ``FEATSTORE_FAULT_MARKER=/path`` it fires
only once across processes (the marker file is created just before the kill),
so that a retried worker gets through; the marker holds the pid of the
process that fired. A ``:hang`` suffix (``FEATSTORE_FAULT=sink@2:hang``) makes
the process stop there for an hour instead, and ``:sleep=S`` for S seconds, so
that a test can kill a job, or remove a node, at a known point.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "FEATSTORE_FAULT"
MARKER_ENV = "FEATSTORE_FAULT_MARKER"


def maybe_fault(point: str, unit: int | None = None) -> None:
    """SIGKILL this process if ``FEATSTORE_FAULT`` names ``point`` (and ``unit``)."""
    want = os.environ.get(ENV)
    if not want:
        return
    want, _, action = want.partition(":")
    name, _, at = want.partition("@")
    if name != point or (at and unit is not None and int(at) != unit):
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    if action == "hang" or action.startswith("sleep="):
        time.sleep(3600 if action == "hang" else float(action.partition("=")[2]))
        return
    os.kill(os.getpid(), signal.SIGKILL)
