"""Day batches: whole trading days, packed up to ``batch_size`` stocks (design.md section 2).

For date d the batch rows are the stocks with a row at d (``Panel.valid[d]``); their features are
the last ``seq_len`` dates up to and including d, gathered by fancy indexing from the normalized
``[D, N, F]`` array (no windows are materialized ahead of time). Window dates before the first
panel date are padded with zeros and ``observed=False`` (those dates are kept, not skipped; the
pipeline's split warmup keeps them out of train/val/test anyway). Targets are NaN where missing and
masked. Per-day graphs are offset and concatenated: block-diagonal, never an edge across days.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from atft.data.batch import DayBatch, Graph, empty_graph
from atft.data.normalize import NormalizedPanel
from atft.data.panel import Panel
from atft.data.prefetch import prefetch as prefetched
from atft.errors import InputError


class GraphSource(Protocol):
    """What the loader needs from a graph builder (``atft.graph.builder.GraphBuilder``): the graph
    of date index ``d`` over the panel rows ``rows``, indices into ``rows``.

    Shapes:
        rows: ``[n]`` -> edge_index ``[2, E]`` long, edge_attr ``[E, 3]`` float32.
    """

    def for_date(self, panel: Panel, d: int, rows: np.ndarray) -> Graph: ...


class DayBatchLoader:
    """Iterates ``DayBatch`` objects over a set of dates.

    Args:
        panel: the raw panel (validity, raw targets, returns for the graph, codes, dates).
        normalized: the normalizer's output for the same panel.
        date_indices: dates (indices into ``panel.dates``) this loader serves, e.g. ``split.train``.
        seq_len: T, dates per feature window.
        batch_size: max stocks per batch; whole days are packed while the total stays <= this (a day
            larger than ``batch_size`` is a batch on its own).
        graph_builder: builds each day's graph; None = no edges.
        shuffle: shuffle the day order (seeded by ``seed`` and the epoch set by ``set_epoch``).
        seed: seed of the day order.
        min_stocks: dates with fewer valid stocks are skipped (counted in ``skipped_dates``).
        num_replicas, rank: data parallelism (``atft.train.distributed``): this loader serves
            replica ``rank``'s share of the days, like ``torch.utils.data.DistributedSampler``:
            the epoch's day order (the same on every replica) is padded by repeating its first
            days to a multiple of ``num_replicas`` and dealt round-robin (replica r gets the
            positions r, r + K, ...); batches are packed jointly, so every replica has the same
            number of batches and no replica's batch exceeds ``batch_size``. ``num_replicas=1``
            is the plain loader.
        prefetch: batches produced ahead by a background thread while the consumer works
            (``atft.data.prefetch``; ``data.prefetch``); 0 = each batch produced on demand. The
            batches and their order are the same either way.

    The day order and packing of an epoch are fixed by ``set_epoch(e)`` (epoch 0 at creation);
    ``len(loader)`` is the number of batches of the current epoch.
    """

    def __init__(self, panel: Panel, normalized: NormalizedPanel, date_indices: np.ndarray, seq_len: int,
                 batch_size: int, graph_builder: GraphSource | None = None, shuffle: bool = False,
                 seed: int = 0, min_stocks: int = 1, num_replicas: int = 1, rank: int = 0,
                 prefetch: int = 0) -> None:
        if prefetch < 0:
            raise InputError(f"prefetch={prefetch} must be >= 0. Fix: set data.prefetch to 0 (off), 1 or 2.")
        if seq_len < 1 or batch_size < 1:
            raise InputError(f"seq_len={seq_len} and batch_size={batch_size} must be >= 1. "
                             "Fix: set data.sequence_length and train.batch_size to positive values.")
        if normalized.features.shape[:2] != panel.valid.shape:
            raise InputError(f"normalized features {normalized.features.shape[:2]} do not match the panel "
                             f"{panel.valid.shape}. Fix: normalize this panel (Normalizer.transform(panel)).")
        if not 0 <= rank < num_replicas:
            raise InputError(f"rank {rank} outside [0, {num_replicas}). Fix: pass 0 <= rank < num_replicas.")
        idx = np.asarray(date_indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= panel.num_dates):
            raise InputError(f"date indices outside [0, {panel.num_dates}). Fix: pass indices into panel.dates.")
        self.panel = panel
        self.normalized = normalized
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.graph_builder = graph_builder
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.min_stocks = int(min_stocks)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.prefetch = int(prefetch)
        counts = panel.valid[idx].sum(axis=1)  # [D_split]
        keep = counts >= self.min_stocks
        self.dates = idx[keep]  # [D_kept] date indices served
        self.day_sizes = counts[keep].astype(np.int64)  # [D_kept] stocks per day
        self.skipped_dates = int((~keep).sum())
        self.epoch = 0
        self._plan = self._make_plan()
        self._codes = np.asarray(panel.codes, dtype=object)

    def set_epoch(self, epoch: int) -> None:
        """Fix the day order (and so the packing) of ``epoch``."""
        self.epoch = int(epoch)
        self._plan = self._make_plan()

    def _make_plan(self) -> list[np.ndarray]:
        """Positions into ``self.dates`` per batch of this replica, in iteration order.

        A slot is one day per replica (``num_replicas`` consecutive days of the epoch's order);
        a batch takes consecutive slots while every replica's stocks stay <= ``batch_size``.
        """
        order = np.arange(self.dates.size)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dates.size)
        k = self.num_replicas
        if k > 1 and order.size % k:  # pad like DistributedSampler: repeat the first days
            order = np.resize(order, order.size + k - order.size % k)
        slots = order.reshape(-1, k)  # [S, K] day positions, one column per replica
        sizes = self.day_sizes[slots]  # [S, K] stocks
        plan: list[np.ndarray] = []
        start = 0
        total = np.zeros(k, dtype=np.int64)
        for i in range(slots.shape[0]):  # loop over slots (days, not stocks): cheap
            if i > start and bool((total + sizes[i] > self.batch_size).any()):
                plan.append(slots[start:i, self.rank])
                start, total = i, np.zeros(k, dtype=np.int64)
            total += sizes[i]
        if slots.shape[0]:
            plan.append(slots[start:, self.rank])
        return plan

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[DayBatch]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[DayBatch]:
        """The current epoch's batches from the ``start``-th on (a run resumed mid-epoch).

        With ``prefetch`` > 0 a background thread produces them ahead (a ``Prefetcher``: close it,
        or drop it, when stopping early); the epoch's plan is fixed at this call.
        """
        return prefetched(self._produce(self._plan[start:]), self.prefetch)

    def _produce(self, plan: list[np.ndarray]) -> Iterator[DayBatch]:
        for positions in plan:
            yield self._batch(self.dates[positions])

    def day(self, i: int, *, max_stocks: int = 0, seed: int = 0) -> DayBatch:
        """A single-day batch for the ``i``-th served date (chronological order).

        Args:
            i: position among the served dates.
            max_stocks: keep at most this many of the day's stocks, drawn without replacement
                (seeded by ``seed`` and the date index; kept in panel order) -- the graph is then
                built on the drawn stocks only; 0 = every stock of the day.
            seed: seed of the draw.
        """
        if not 0 <= i < self.dates.size:
            raise InputError(f"day {i} out of range: this loader serves {self.dates.size} dates "
                             f"({self.skipped_dates} skipped for < {self.min_stocks} stocks). Fix: pass 0 <= i < {self.dates.size}.")
        if max_stocks < 0:
            raise InputError(f"max_stocks={max_stocks} must be >= 0 (0 = every stock of the day).")
        return self._batch(self.dates[i:i + 1], max_stocks=max_stocks, seed=seed)

    def _batch(self, days: np.ndarray, max_stocks: int = 0, seed: int = 0) -> DayBatch:
        """Pack the given dates (indices into the panel) into one DayBatch (``day``: ``max_stocks``)."""
        parts = [self._day_arrays(int(d), self._rows(int(d), max_stocks, seed)) for d in days.tolist()]
        rows = [p[0] for p in parts]
        offsets = np.cumsum([0] + [r.size for r in rows[:-1]])
        edges, attrs = [], []
        for off, (r, d) in zip(offsets.tolist(), zip(rows, days.tolist(), strict=True), strict=True):
            ei, ea = (self.graph_builder.for_date(self.panel, d, r) if self.graph_builder is not None
                      else empty_graph())
            edges.append(ei + off)
            attrs.append(ea)
        day_index = np.repeat(np.arange(len(rows)), [r.size for r in rows])
        cat = np.concatenate
        feats, observed, targets, raw = (cat([p[i] for p in parts]) for i in range(1, 5))
        t = torch.from_numpy(targets)
        all_rows = cat(rows)
        batch = DayBatch(
            features=torch.from_numpy(feats), targets=t, target_mask=~torch.isnan(t),
            edge_index=torch.cat(edges, dim=1), edge_attr=torch.cat(attrs, dim=0),
            day_index=torch.from_numpy(day_index.astype(np.int64)),
            codes=self._codes[all_rows].tolist(), dates=[self.panel.dates[d] for d in days.tolist()],
            observed=torch.from_numpy(observed), raw_targets=torch.from_numpy(raw),
            meta={"date_indices": days.tolist(), "rows": all_rows},
        )
        batch.validate()  # once, here on the CPU: the model's forward reads no values (no host sync)
        return batch

    def _rows(self, d: int, max_stocks: int, seed: int) -> np.ndarray:
        """The stocks of date ``d``: every valid one, or ``max_stocks`` of them drawn (seeded, sorted).

        Shapes:
            -> ``[n]`` int64 indices into the panel's stocks, ascending.
        """
        rows = np.flatnonzero(self.panel.valid[d])  # [n]
        if 0 < max_stocks < rows.size:
            rows = np.sort(np.random.default_rng([seed, d]).choice(rows, size=max_stocks, replace=False))
        return rows

    def _day_arrays(self, d: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows and gathered arrays of one day.

        Shapes:
            rows: ``[n]`` stock indices of date ``d`` ->
            rows ``[n]``, features ``[n, T, F]`` float32, observed ``[n, T]`` bool,
            targets ``[n, H]`` float32 (training scale), raw targets ``[n, H]`` float32.
        """
        win = np.arange(d - self.seq_len + 1, d + 1)  # [T]
        inside = win >= 0
        w = np.where(inside, win, 0)
        feats = self.normalized.features[w[:, None], rows[None, :]]  # [T, n, F]
        obs = self.panel.valid[w[:, None], rows[None, :]] & inside[:, None]  # [T, n]
        if not inside.all():
            feats[~inside] = 0.0  # padding before the first panel date
        feats = np.ascontiguousarray(feats.transpose(1, 0, 2))  # [n, T, F]
        return (rows, feats, np.ascontiguousarray(obs.T), self.normalized.targets[d, rows],
                self.normalized.raw_targets[d, rows])
