"""Prefetching (``atft.data.prefetch``, ``DayBatchLoader(prefetch=k)``): same batches in the same
order, worker errors re-raised with their traceback, no thread left behind, bounded, resumable."""

from __future__ import annotations

import gc
import threading
import traceback
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from atft.data.batch import DayBatch
from atft.data.loader import DayBatchLoader
from atft.data.prefetch import Prefetcher, prefetch
from atft.errors import InputError
from atft.train.step import train_epoch
from tests.reference import raw_builder
from tests.test_loader import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
WAIT_S = 30.0  # generous bound of the waits for the worker (never a timed assertion)


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "atft-prefetch"]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    assert not workers()
    yield
    gc.collect()
    assert not workers(), "a prefetch worker outlived its consumer"


def graph_loader(prefetch_depth: int, shuffle: bool = True) -> DayBatchLoader:
    """20 dates x 6 stocks in two correlated groups, graphs on, a few dates per batch."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 2))
    g = np.array([0, 0, 0, 1, 1, 1])
    valid = rng.random((60, 6)) > 0.1
    panel, norm = tiny(valid, returns=f[:, g] + 0.3 * rng.normal(size=(60, 6)), sector=g)
    return DayBatchLoader(panel, norm, np.arange(40, 60), seq_len=3, batch_size=12,
                          graph_builder=raw_builder(lookback=20, min_obs=15, top_k=2, threshold=0.3),
                          shuffle=shuffle, seed=3, prefetch=prefetch_depth)


def same(a: DayBatch, b: DayBatch) -> bool:
    return (a.meta["date_indices"] == b.meta["date_indices"] and a.codes == b.codes
            and torch.equal(a.features, b.features) and torch.equal(a.edge_index, b.edge_index)
            and torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.target_mask, b.target_mask))


@pytest.mark.parametrize("depth", [1, 2])
def test_same_batches_in_the_same_order_as_without_prefetch(depth: int) -> None:
    plain, ahead = graph_loader(0), graph_loader(depth)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        ahead.set_epoch(epoch)
        want, got = list(plain), list(ahead)
        assert len(got) == len(want) == len(ahead) > 3
        assert all(same(a, b) for a, b in zip(want, got, strict=True))
        assert sum(b.edge_index.shape[1] for b in got) > 0  # graphs were built in the worker


def test_resume_position_gives_the_rest_of_the_epoch() -> None:
    plain, ahead = graph_loader(0), graph_loader(1)
    plain.set_epoch(1)
    ahead.set_epoch(1)
    want = list(plain.batches(3))
    got = list(ahead.batches(3))
    assert len(got) == len(plain) - 3 and all(same(a, b) for a, b in zip(want, got, strict=True))


def test_batches_are_prefetching_only_when_asked() -> None:
    it = graph_loader(1).batches()
    assert isinstance(it, Prefetcher)
    it.close()
    assert not isinstance(graph_loader(0).batches(), Prefetcher)
    with pytest.raises(InputError, match="prefetch"):
        graph_loader(-1)


def _failing(n_ok: int) -> Iterator[int]:
    yield from range(n_ok)
    raise ZeroDivisionError("planted in the worker")


def test_worker_exception_is_reraised_in_the_consumer_with_its_traceback() -> None:
    got: list[int] = []
    with pytest.raises(ZeroDivisionError, match="planted in the worker") as info:
        for x in Prefetcher(_failing(3), depth=2):
            got.append(x)
    assert got == [0, 1, 2]  # the items before the failure came first
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_failing" in frames and "_work" in frames  # the worker's frames are kept
    del info


@pytest.mark.parametrize("how", ["break", "close", "drop", "with"])
def test_consumer_stopping_early_leaves_no_thread(how: str) -> None:
    it = graph_loader(2).batches()
    next(it)
    assert workers()
    if how == "close":
        it.close()
    elif how == "with":
        with it:
            next(it)
    elif how == "break":
        for _ in it:
            break
    del it  # "drop": the last reference goes, __del__ closes it
    gc.collect()
    assert not workers()


def test_keyboard_interrupt_in_the_step_leaves_no_thread() -> None:
    loader = graph_loader(1)

    class Interrupting(torch.nn.Module):
        def forward(self, batch: DayBatch) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_epoch(Interrupting(), loader, lambda out, b: out, torch.optim.SGD([torch.zeros(1)], lr=0.1))
    assert not workers()  # train_epoch closed its batches in a finally: no garbage collection needed


def test_worker_runs_ahead_and_stays_bounded() -> None:
    produced: list[int] = []
    ahead = threading.Event()

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            if i == 3:
                ahead.set()
            yield i

    it = Prefetcher(source(), depth=2)
    assert next(it) == 0
    assert ahead.wait(WAIT_S)  # items 1, 2 queued, item 3 produced: ahead of the consumer
    ahead.clear()
    threading.Event().wait(0.2)  # a chance to run further: it must not (queue full)
    assert len(produced) == 4  # consumed 1 + depth 2 + the one waiting to be put
    it.close()
    assert not it.alive and list(it) == []


def test_prefetch_zero_is_the_source_itself() -> None:
    assert list(prefetch(iter([1, 2, 3]), 0)) == [1, 2, 3]
    assert list(prefetch([1, 2, 3], 2)) == [1, 2, 3]
    with pytest.raises(ValueError):
        prefetch([1], -1)
