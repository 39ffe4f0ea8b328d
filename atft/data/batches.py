"""A dataset read in bounded batches, for the one-pass statistics of ``atft.data.stats``.

* ``open_source``: a LazyFrame from a path, LazyFrame or DataFrame, and for a parquet path its
  row-group sizes (``Source``);
* ``batch_ranges``: row ranges of about ``rows`` rows: whole row groups for a parquet path
  (polars decodes a whole row group for any slice of it), else ``rows`` rounded to whole runs
  of the data's order (``aligned_rows``), so that regular batches need no gather;
* ``read_batches``: the ranges collected one ahead in a worker thread (at most two batches in
  memory; ``LazyFrame.collect_batches`` decodes ahead without bound when its consumer is the
  slower side, pola-rs/polars#28569);
* ``DateIds``: dense ids ``0..G-1`` for the dates met batch by batch (``physical_keys``);
* ``Layout`` / ``layout_of``: how one batch's rows form a date-major ``[D, S]`` grid (D dates of
  the batch, S slots), a view of the rows when they already do;
* ``Scratch``: reusable per-thread buffers of one pass.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from atft.data.source import resolve_files, scan
from atft.errors import DataError

ENGINE: Literal["streaming"] = "streaming"  # bounded memory: a file larger than RAM still reads


@dataclass(frozen=True)
class Source:
    """The frame to read; ``row_groups``: row counts of its parquet row groups in scan order
    (None: not a parquet path, batches are cut by ``aligned_rows``)."""

    lf: pl.LazyFrame
    row_groups: tuple[int, ...] | None = None


def open_source(data: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str], code_col: str,
                date_col: str) -> Source:
    """``data`` as a ``Source``: a path is scanned (``atft.data.source.scan``, footers read for
    the row groups); a frame is used as it is.

    Raises:
        DataError: unreadable data, or no ``code_col`` / ``date_col`` column.
    """
    if isinstance(data, (str, os.PathLike)):
        import pyarrow.parquet as pq

        lf = scan(data, code_col, date_col)
        groups = tuple(m.row_group(i).num_rows for f in resolve_files(data) for m in [pq.read_metadata(f)]
                       for i in range(m.num_row_groups))
        return Source(lf, groups)
    lf = data.lazy()
    absent = [c for c in (code_col, date_col) if c not in lf.collect_schema()]
    if absent:
        raise DataError(f"frame has no {absent} column(s). Fix: name the stock id and date columns "
                        "as data.code_col / data.date_col say.")
    return Source(lf)


def batch_ranges(src: Source, query: pl.LazyFrame, rows: int) -> list[tuple[int, int]]:
    """(offset, length) ranges covering the frame, about ``rows`` rows each (module docstring)."""
    n = src.lf.select(pl.len()).collect(engine=ENGINE).item()  # parquet: from the footers
    groups = src.row_groups
    if groups is None or sum(groups) != n:
        step = aligned_rows(query, rows)
        return [(s, min(step, n - s)) for s in range(0, n, step)]
    out: list[tuple[int, int]] = []
    start = size = 0
    for g in groups:
        if size and size + g > rows:
            out.append((start, size))
            start, size = start + size, 0
        size += g
    return [*out, (start, size)] if size else out


def aligned_rows(query: pl.LazyFrame, rows: int) -> int:
    """``rows`` rounded down to whole runs of the data's order (a stock's dates when sorted by
    (Code, Date), a date's stocks when sorted by Date), read from the first ``rows`` date keys
    (column ``_d`` of ``query``)."""
    keys, _ = physical_keys(query.select("_d").slice(0, rows).collect(engine=ENGINE).to_series())
    step = np.diff(keys)
    ends = np.flatnonzero(step < 0) if (step < 0).any() else np.flatnonzero(step > 0)
    if not ends.size:
        return max(1, rows)
    run = int(ends[0]) + 1
    return max(run, rows // run * run)


def read_batches(query: pl.LazyFrame, ranges: list[tuple[int, int]],
                 engine: Literal["in-memory", "streaming"] = ENGINE) -> Iterator[pl.DataFrame]:
    """``query`` in row ranges (``slice``, pushed down to the parquet row groups), the next one
    collected in a worker thread while the caller folds this one, its columns in one chunk each
    (numpy views). ``engine``: "in-memory" for a parquet scan cut at row groups (one chunk per
    column as decoded, 1.6 s less CPU on the 5M-row benchmark than rechunking the streaming
    engine's morsels); "streaming" for any other plan (a slice of a filter is then still
    computed batch by batch)."""
    if not ranges:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        def collect(k: int) -> pl.DataFrame:
            return query.slice(*ranges[k]).collect(engine=engine).rechunk()

        ahead = pool.submit(collect, 0)
        for k in range(len(ranges)):
            batch = ahead.result()
            if k + 1 < len(ranges):
                ahead = pool.submit(collect, k + 1)
            yield batch


# ----------------------------------------------------------------------------- date keys and ids


def int_key(dtype: pl.DataType) -> bool:
    """Dates of this dtype are keyed by their physical integers (others via a Categorical)."""
    return dtype.is_integer() or dtype.is_temporal() or dtype == pl.Boolean


def physical_keys(s: pl.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """Physical integer keys ``[R]`` int64 of a column and its null mask (None: no nulls)."""
    phys = s.to_physical()
    if not s.null_count():
        return phys.to_numpy().astype(np.int64, copy=False), None
    return phys.fill_null(0).to_numpy().astype(np.int64, copy=False), s.is_null().to_numpy()


class DateIds:
    """Dense ids ``0..n-1`` for the distinct integer keys met batch by batch, in the order met
    (a null key is one more id, ``null_id``). Keys are looked up in a table over the span of
    the keys met (dates as days) when that span is at most ``TABLE_SPAN``, else by binary search."""

    TABLE_SPAN = 1 << 20

    def __init__(self) -> None:
        self._sorted = np.empty(0, np.int64)  # distinct keys, sorted, and the id of each
        self._sorted_ids = np.empty(0, np.int64)
        self._chunks: list[np.ndarray] = []  # distinct keys in id order
        self._table: np.ndarray | None = None  # key - _sorted[0] -> id (-1: not met)
        self.n = 0
        self.null_id: int | None = None

    def __call__(self, keys: np.ndarray, null: np.ndarray | None) -> np.ndarray:
        """Shapes: keys ``[R]`` int64, null ``[R]`` bool or None -> ids ``[R]`` int64."""
        k = keys if null is None else keys[~null]
        found = self._find(k)
        new = found < 0
        if new.any():
            self._add(np.unique(k[new]))
            found = self._find(k)
        if null is None:
            return found
        ids = np.empty(keys.size, np.int64)
        ids[~null] = found
        if self.null_id is None and null.any():
            self.null_id = self.n
            self._chunks.append(np.zeros(1, np.int64))
            self.n += 1
        ids[null] = self.null_id if self.null_id is not None else 0
        return ids

    def _find(self, k: np.ndarray) -> np.ndarray:
        """Ids of the keys ``k`` (-1 where not met yet)."""
        if not k.size or not self._sorted.size:
            return np.full(k.size, -1, np.int64)
        base = int(self._sorted[0])
        if self._table is not None and int(k.min()) >= base and int(k.max()) < base + self._table.size:
            return self._table[k - base]
        pos = np.minimum(np.searchsorted(self._sorted, k), self._sorted.size - 1)
        return np.where(self._sorted[pos] == k, self._sorted_ids[pos], -1)

    def _add(self, new: np.ndarray) -> None:
        merged = np.concatenate([self._sorted, new])
        order = np.argsort(merged, kind="stable")
        self._sorted = merged[order]
        self._sorted_ids = np.concatenate([self._sorted_ids, np.arange(self.n, self.n + new.size)])[order]
        self._chunks.append(new)
        self.n += new.size
        span = int(self._sorted[-1] - self._sorted[0]) + 1
        self._table = None
        if span <= self.TABLE_SPAN:
            self._table = np.full(span, -1, np.int64)
            self._table[self._sorted - self._sorted[0]] = self._sorted_ids

    def keys(self) -> np.ndarray:
        """The distinct keys in id order ``[n]`` (0 at ``null_id``)."""
        return np.concatenate(self._chunks) if self._chunks else np.empty(0, np.int64)


# ----------------------------------------------------------------------------- batch layouts


@dataclass(frozen=True)
class Layout:
    """How a batch's rows form a date-major ``[D, S]`` grid (D dates of the batch, S slots).

    ``slot``: S runs holding the same dates in the same order (a (Code, Date)-sorted panel), row
    ``s * D + d``; ``date``: D runs of S rows, one date each (Date-sorted), row ``d * S + s``;
    ``gather``: any other order, rows gathered date-major (``index``), padded where a date has
    fewer than S rows (``pad``, True at padding).

    Shapes:
        dates ``[D]`` (batch-local date of each grid row), index / pad ``[D * S]`` or None.
    """

    kind: Literal["slot", "date", "gather"]
    dates: np.ndarray
    slots: int
    index: np.ndarray | None = None
    pad: np.ndarray | None = None

    def grid(self, col: np.ndarray, d0: int = 0, d1: int | None = None) -> np.ndarray:
        """Grid dates ``d0:d1`` of one column ``[R]``: ``[k, S]`` (a view for ``slot`` / ``date``;
        padding NaN, so float columns only)."""
        d, s = self.dates.size, self.slots
        d1 = d if d1 is None else d1
        if self.kind == "slot":
            return col.reshape(s, d)[:, d0:d1].T
        if self.kind == "date":
            return col.reshape(d, s)[d0:d1]
        assert self.index is not None and self.pad is not None
        out = np.take(col, self.index[d0 * s:d1 * s])
        out[self.pad[d0 * s:d1 * s]] = np.nan
        return out.reshape(d1 - d0, s)

    def rows(self, cells: np.ndarray, d0: int = 0) -> np.ndarray:
        """Batch rows of flat grid positions ``(d - d0) * S + s`` (not padding)."""
        d, s = self.dates.size, self.slots
        if self.kind == "slot":
            return (cells % s) * d + d0 + cells // s
        if self.kind == "date":
            return cells + d0 * s
        assert self.index is not None
        return self.index[cells + d0 * s]


def layout_of(loc: np.ndarray, n_dates: int) -> Layout:
    """The ``Layout`` of a batch whose row r is on batch-local date ``loc[r]`` (``0..n_dates-1``,
    every date present)."""
    cnt = np.bincount(loc, minlength=n_dates)
    s = int(cnt.max()) if cnt.size else 0
    if cnt.size and (cnt == s).all():
        m = loc.reshape(s, n_dates)
        if (m == m[0]).all():
            return Layout("slot", m[0].copy(), s)
        m = loc.reshape(n_dates, s)
        if (m == m[:, :1]).all():
            return Layout("date", m[:, 0].copy(), s)
    order = np.argsort(loc, kind="stable")
    starts = np.cumsum(cnt) - cnt
    cell = loc[order] * s + np.arange(loc.size) - np.repeat(starts, cnt)
    index = np.zeros(n_dates * s, np.int64)
    index[cell] = order
    pad = np.ones(n_dates * s, bool)
    pad[cell] = False
    return Layout("gather", np.arange(n_dates), s, index, pad)


class Scratch:
    """Reusable buffers of one pass, one set per thread (dropped with the pass), 2 MiB-aligned in
    allocations numpy backs by huge pages (fewer TLB misses for strided access: the slot
    layout's transpose measured 15-25 % faster)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, name: str, size: int, dtype: type[np.generic] = np.float32) -> np.ndarray:
        """This thread's buffer ``name`` with room for ``size`` values (contents undefined)."""
        bufs = self._local.__dict__.setdefault("bufs", {})
        b = bufs.get((name, dtype))
        if b is None or b.size < size:
            item, huge = np.dtype(dtype).itemsize, 2**21
            raw = np.empty(max(size * item, 2**22) + huge, np.uint8)  # >= 4 MiB: numpy madvises huge pages
            off = -raw.ctypes.data % huge
            b = bufs[(name, dtype)] = raw[off:off + (raw.size - huge) // item * item].view(dtype)
        return b[:size]
