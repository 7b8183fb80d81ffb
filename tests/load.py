"""Keep every core busy while a block runs: determinism tests run under load,
because a timing-dependent path (threads, asm kernels that misbehave) shows
itself there and hides on a quiet machine (issue 17)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["busy_cores"]

# Each spinner ends by itself after this many seconds even if the test dies
# before it can stop them.
SPIN_LIMIT_S = 300


@contextlib.contextmanager
def busy_cores(n: int | None = None) -> Iterator[int]:
    """Run ``n`` (default: one more than the CPU count) busy-loop processes for the
    duration of the block; yields how many run."""
    n = (os.cpu_count() or 1) + 1 if n is None else n
    code = f"import time\nend = time.monotonic() + {SPIN_LIMIT_S}\nwhile time.monotonic() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        yield n
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
