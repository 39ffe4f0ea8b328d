"""Progress you can see without a terminal: a line every ``every_s`` seconds.

On a TTY a run shows a tqdm bar; in CI logs and under ``nohup`` a bar is noise and silence is
worse (12 minutes without a line before the first epoch ended), so long loops call
``Ticker.tick`` and a plain line is logged at most every ``every_s`` seconds (and never more than
needed: a tick is one clock read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Ticker:
    """Logs ``line()`` at INFO when ``every_s`` seconds have passed since the last line (or the start)."""

    def __init__(self, log: logging.Logger, every_s: float) -> None:
        self.log, self.every_s = log, float(every_s)
        self.start = self.last = time.perf_counter()

    def tick(self, line: Callable[[float], str]) -> None:
        """``line(elapsed_seconds)`` is built only when a line is due."""
        now = time.perf_counter()
        if self.every_s > 0 and now - self.last >= self.every_s:
            self.last = now
            self.log.info(line(now - self.start))


def eta(done: int, total: int, elapsed: float) -> str:
    """Remaining time as H:MM:SS from the rate so far ("?" before the first unit of work)."""
    if done <= 0 or total <= done:
        return "?" if done <= 0 else "0:00:00"
    left = int(elapsed / done * (total - done))
    return f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"
