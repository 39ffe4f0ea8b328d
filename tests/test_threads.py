"""The thread count of a run: usable cores (affinity, cgroup quota), the governor picks the fastest."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from atft.train import threads
from atft.train.threads import ThreadGovernor, available_cores, candidates, configure_threads


@pytest.fixture(autouse=True)
def restore_threads():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_candidates_and_available_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert candidates(1) == [1] and candidates(2) == [1, 2] and candidates(6) == [1, 2, 4, 6]
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert available_cores() == 4
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)  # a container allowed 1.5 CPUs
    assert available_cores() == 1


def test_the_governor_keeps_the_faster_count_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    gov = ThreadGovernor(cores=2, probe_steps=2, reprobe_every=0)
    slow = {1: 0.002, 2: 0.01}  # a busy machine: 2 threads are 5x slower per step
    fake = {"t": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: fake["t"])
    with caplog.at_level(logging.INFO, logger="atft.train"):
        for _ in range(7):  # 1 warm-up + 2 probes at each count + 2 more
            gov.before_step()
            fake["t"] += slow[torch.get_num_threads()]
            gov.after_step(100)
    assert torch.get_num_threads() == 1 and gov.current == 1
    assert "torch threads: 1 (fastest of [1, 2] on 2 available cores" in caplog.text


def test_the_governor_sees_bursts_that_a_median_would_hide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside a busy process 2 threads are usually a bit faster per step but now and then 10x slower
    (an OpenMP barrier on a parked thread): per sample they cost more, so 1 thread must win."""
    gov = ThreadGovernor(cores=2, probe_steps=4, reprobe_every=0)
    steps = {1: iter([0.010] * 10), 2: iter([0.008, 0.008, 0.1, 0.008] * 3)}
    fake = {"t": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: fake["t"])
    for _ in range(1 + 2 * 4):
        gov.before_step()
        fake["t"] += next(steps[torch.get_num_threads()])
        gov.after_step(100)
    assert gov.current == 1 and torch.get_num_threads() == 1


def test_the_probe_alternates_the_counts() -> None:
    gov = ThreadGovernor(cores=2, probe_steps=3, reprobe_every=0)
    assert gov._plan == [-1, 1, 2, 1, 2, 1, 2]


def test_a_fixed_count_is_used_as_it_is() -> None:
    assert configure_threads(1, False) is None and torch.get_num_threads() == 1
    assert configure_threads(3, True) is None and torch.get_num_threads() == 1  # single_process wins
    assert isinstance(configure_threads(0, False), ThreadGovernor)
