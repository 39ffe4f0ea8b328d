"""Stopping a run cleanly: Ctrl-C / SIGTERM become a request honoured at the next step boundary.

``StopRequest`` (a context manager the CLI wraps around ``fit``) turns the first SIGINT or SIGTERM
into a flag; the training loop checks it after every step, saves a mid-epoch ``last.pt`` (model,
optimizer, scheduler, RNG, the epoch's position and running sums) and raises ``RunInterrupted``;
``atft train --resume`` then ends with the same parameters as an uninterrupted run (CPU, a fixed
thread count). A second Ctrl-C interrupts at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any


class RunInterrupted(RuntimeError):
    """The run stopped on a stop request; ``saved`` says whether ``last.pt`` can resume it."""

    def __init__(self, run_dir: Path, epoch: int, batches: int, saved: bool, signal_name: str,
                 nproc: int = 1) -> None:
        where = f"epoch {epoch}, after batch {batches}" if saved else "before the first training step"
        launch = f"atft train --nproc {nproc}" if nproc > 1 else "atft train"
        how = (f"continue with: {launch} --resume {run_dir}" if saved
               else "nothing was saved (the run directory is removed); start it again")
        super().__init__(f"interrupted by {signal_name} at {where}; {how}")
        self.run_dir, self.epoch, self.batches, self.saved = run_dir, epoch, batches, saved


class StopRequest:
    """SIGINT / SIGTERM -> ``requested`` (the signal's name); a second SIGINT raises KeyboardInterrupt.

    Installs its handlers only in the main thread (elsewhere it is an inert flag) and restores the
    previous ones on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
