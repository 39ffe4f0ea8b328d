"""How many torch threads a run uses: what the process may really use, then the fastest by measurement.

``train.num_threads: 0`` (the default) means *auto*. On a 2-core machine, 2 threads were 1.47x
faster than 1 when idle, and 4.4x SLOWER beside one busy process (OpenMP workers spin on barriers
of a thread the scheduler has parked): no fixed count is right on a shared machine. So:

1. ``available_cores``: the CPUs this process may run on (``os.sched_getaffinity``), capped by
   the cgroup CPU quota (a container's ``cpu.max`` / ``cpu.cfs_quota_us``);
2. ``ThreadGovernor``: the candidate counts are 1, 2, 4, ... up to that number; the first steps
   of the run are timed at each candidate (``probe_steps`` steps each, real training steps, so
   nothing is wasted), the fastest per sample is kept, and the probe repeats every
   ``reprobe_every`` steps because the machine's load changes. What was chosen and why (seconds
   per 1,000 samples at each count) goes to the log.

A fixed ``train.num_threads`` (or ``train.single_process``) is used as it is: the choice of auto
depends on timing, and float reductions differ with the thread count, so bit-for-bit repeatable
runs (and a resume equal to an uninterrupted run) need a fixed count.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger("atft.train")


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``); None = no limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else float(quota) / float(period)
    except (OSError, ValueError):
        pass
    try:
        q = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if q <= 0 else q / p
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores`` (and ``cores`` itself)."""
    out, k = [], 1
    while k < cores:
        out.append(k)
        k *= 2
    return sorted({*out, cores})


class ThreadGovernor:
    """Picks the torch thread count by timing real training steps (module docstring).

    Call ``before_step()`` before and ``after_step(samples)`` after every training step.
    """

    def __init__(self, cores: int | None = None, probe_steps: int = 3, reprobe_every: int = 200) -> None:
        self.cores = cores or available_cores()
        self.options = candidates(self.cores)
        self.probe_steps = probe_steps
        self.reprobe_every = reprobe_every
        self.steps = 0
        self.current = torch.get_num_threads()
        self._times: dict[int, list[float]] = {}
        self._plan: list[int] = []
        self._t0 = 0.0
        self._start_probe()

    def _start_probe(self) -> None:
        self._times = {k: [] for k in self.options}
        # one untimed warm-up step (first-call allocations), then probe_steps rounds of one timed
        # step per count, interleaved (1, 2, 1, 2, ...: a change of load hits every count alike)
        self._plan = ([-1] + [k for _ in range(self.probe_steps) for k in self.options]
                      if len(self.options) > 1 else [])
        if not self._plan:
            self._set(self.options[0], f"{self.cores} core available")

    def _set(self, k: int, why: str) -> None:
        if k != torch.get_num_threads():
            torch.set_num_threads(k)
        if k != self.current or why:
            log.info("torch threads: %d (%s)", k, why)
        self.current = k

    def before_step(self) -> None:
        if self._plan:
            k = self._plan[0] if self._plan[0] > 0 else self.current
            if k != torch.get_num_threads():
                torch.set_num_threads(k)
        self._t0 = time.perf_counter()

    def after_step(self, samples: int) -> None:
        dt = time.perf_counter() - self._t0
        self.steps += 1
        if self._plan:
            k = self._plan.pop(0)
            if samples > 0 and k > 0:
                self._times[k].append(dt / samples)
            if not self._plan:
                self._decide()
        elif self.reprobe_every and self.steps % self.reprobe_every == 0:
            self._start_probe()

    def _decide(self) -> None:
        # mean s per sample: throughput is what a run pays. Not the median: beside a busy process
        # more threads are slow in bursts (an OpenMP barrier waiting on a parked thread), which a
        # median of a few steps hides (bench_threads: a median picked 2 threads that ran 5x slower)
        per = {k: sum(v) / len(v) for k, v in self._times.items() if v}
        if not per:
            return
        best = min(per, key=per.__getitem__)
        why = (f"fastest of {sorted(per)} on {self.cores} available cores: "
               + ", ".join(f"{k} threads {1e3 * v:.3g} s/1k samples" for k, v in sorted(per.items())))
        self._set(best, why)


def probe_threads(cores: int | None = None, repeats: int = 3) -> tuple[int, dict[int, float]]:
    """A short measured probe (~0.1 s per count): the fastest thread count for mid-sized float32
    matmuls, the health suite's choice in a serial run. Returns (count, seconds per count)."""
    opts = candidates(cores or available_cores())
    if len(opts) == 1:
        return opts[0], {}
    before = torch.get_num_threads()
    a, b = torch.randn(256, 384), torch.randn(384, 384)
    secs: dict[int, float] = {}
    try:
        for k in opts:
            torch.set_num_threads(k)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(20):
                    (a @ b).relu_()
                best = min(best, time.perf_counter() - t0)
            secs[k] = best
    finally:
        torch.set_num_threads(before)
    return min(secs, key=secs.__getitem__), secs


def configure_threads(num_threads: int, single_process: bool, world_size: int = 1) -> ThreadGovernor | None:
    """Apply ``train.num_threads`` (``single_process``: 1); None = fixed; 0 = a governor (auto).

    ``world_size`` > 1 (data parallelism, ``atft.train.distributed``): auto is a fixed
    ``available cores // world_size`` (at least 1) per process, no governor: K processes timing
    thread counts against each other measure each other, and a fixed count keeps the ranks'
    arithmetic repeatable (a resume equal to an uninterrupted run).
    """
    if single_process or num_threads > 0:
        k = 1 if single_process else num_threads
        torch.set_num_threads(k)
        log.info("torch threads: %d (train.%s)", k, "single_process" if single_process else "num_threads")
        return None
    if world_size > 1:
        cores = available_cores()
        k = max(1, cores // world_size)
        torch.set_num_threads(k)
        log.info("torch threads: %d per process (auto under %d processes: %d available cores // %d, fixed)",
                 k, world_size, cores, world_size)
        return None
    gov = ThreadGovernor()
    log.info("torch threads: auto (train.num_threads=0): %d available cores (affinity, cgroup quota); "
             "timing %s threads on the first steps, again every %d steps", gov.cores, gov.options, gov.reprobe_every)
    return gov
