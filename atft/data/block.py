"""The block of one batch (features then targets, float32) into per-date sums, by chunks of dates.

A batch's rows form a date-major grid (``atft.data.batches.Layout``). ``fold_block`` cuts its
dates into one chunk per worker thread (at most ``grid_bytes`` of float32 each; smaller chunks
measured slower: numpy's per-call cost outweighs the cache) and folds each chunk, column by
column: min / max over the slots and +-inf counts by numpy reductions (the slot layout reduces
its ``[S, k]`` runs, vectorized along the dates); with leakage on, the column is transposed
into its contiguous ``[k, S]`` block of the chunk's grid ``[B, k, S]``, its missing cells
(``isnan`` there: date-major, no sort) get the column's shift (``Moments.shift``), and
``atft.data.moments.Moments.add`` then folds the grid. Chunks touch distinct dates, so they
run on a thread pool (numpy releases the GIL inside its loops; polars decodes the next batch
meanwhile).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from atft.data.batches import Layout, Scratch
from atft.data.moments import Moments, date_index

GRID_BYTES = 64 * 2**20  # at most this float32 grid per chunk of dates


@dataclass(frozen=True)
class BlockSums:
    """Per (date, block column) sums, indexed by date id (``atft.data.fold.Fold`` owns them).

    Shapes:
        ``[G, B]`` each: miss / inf int64, lo / hi float32 (NaN: no value).
    """

    miss: np.ndarray
    inf: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def fold_block(lay: Layout, gl: np.ndarray, rows: np.ndarray, cols: list[np.ndarray], sums: BlockSums,
               moments: Moments | None, scratch: Scratch, pool: Executor | None = None, workers: int = 1,
               grid_bytes: int = GRID_BYTES, want_rows: list[bool] | None = None) -> list[np.ndarray]:
    """Fold one batch's block in; returns the missing rows (batch row numbers) of the columns
    in ``want_rows`` (others: empty).

    Args:
        lay: the batch's layout; gl: date id of each grid date; rows: rows per grid date.
        cols: the block columns (float32, NaN where missing); scratch: the pass's buffers;
        pool: runs the chunks (None: here) on ``workers`` threads.

    Shapes:
        gl / rows ``[D]``, cols B x ``[R]`` -> B x ``[q_j]``.
    """
    nd, s, nb = gl.size, lay.slots, len(cols)
    step = max(1, min(-(-nd // max(workers, 1)), grid_bytes // (4 * nb * max(s, 1))))  # a chunk per worker
    spans = [(d0, min(nd, d0 + step)) for d0 in range(0, nd, step)]
    want = want_rows if want_rows is not None else [True] * nb

    def run(span: tuple[int, int]) -> list[np.ndarray]:
        return _fold_chunk(lay, gl, rows, cols, sums, moments, scratch, want, *span)

    parts = list(pool.map(run, spans)) if pool is not None and len(spans) > 1 else [run(sp) for sp in spans]
    return [np.concatenate([p[j] for p in parts]) for j in range(nb)]


def _fold_chunk(lay: Layout, gl: np.ndarray, rows: np.ndarray, cols: list[np.ndarray], sums: BlockSums,
                moments: Moments | None, scratch: Scratch, want: list[bool], d0: int, d1: int) -> list[np.ndarray]:
    """Grid dates ``d0:d1`` of every block column (module docstring). Missing cells are flat
    grid positions ``d * S + s``; the targets' (the last columns) sorted, i.e. date-major. With
    the moments, each column's missing cells and padding get its shift in the grid."""
    k, s, nb = d1 - d0, lay.slots, len(cols)
    nf = nb - (moments.nt if moments is not None else 0)
    g = gl[d0:d1]
    lo, hi = np.empty((nb, k), np.float32), np.empty((nb, k), np.float32)
    pad = lay.pad[d0 * s:d1 * s] if lay.pad is not None else None
    ix = date_index(g)  # a slice when the dates are consecutive
    if moments is not None:
        grid = scratch("grid", nb * k * s).reshape(nb, k, s)  # column-major: each column's [k, S] contiguous
        yn = scratch("yn", (nb - nf) * k * s, np.float64).reshape(nb - nf, k * s)  # shifted targets, NaN missing
        c = np.empty((k, nb))
    cells: list[np.ndarray] = []  # per column: missing cells d * S + s (not padding), date-major
    nan = scratch("nan", k * s, np.bool_).reshape(k, s)
    for j, col in enumerate(cols):
        if lay.kind == "slot":  # [S, k] strided view of the runs, reduced along the dates
            v = col.reshape(s, lay.dates.size)[:, d0:d1]
            by_date, axis = v.T, 0  # [k, S]
        else:  # [k, S] grid rows (padding NaN)
            by_date = v = lay.grid(col, d0, d1)
            axis = 1
        np.fmin.reduce(v, axis=axis, out=lo[j])
        np.fmax.reduce(v, axis=axis, out=hi[j])
        if moments is not None:
            np.copyto(grid[j], by_date)  # the slot layout's transpose (into contiguous rows: 1.5x faster)
            by_date = grid[j]
        fill = np.flatnonzero(np.isnan(by_date, out=nan))  # d * S + s, padding included
        cells.append(fill[~pad[fill]] if pad is not None else fill)
        if moments is not None:
            c[:, j] = cj = moments.shift(ix, j, lo[j])
            if j >= nf:
                np.subtract(grid[j], cj[:, None], out=yn[j - nf].reshape(k, s))
            grid[j].reshape(-1)[fill] = cj[fill // s]  # missing cells and padding := the shift (0 once shifted)
    for j in np.flatnonzero((np.isinf(lo) | np.isinf(hi)).any(axis=1)):  # +-inf: count them (rare)
        sums.inf[g, j] += np.isinf(lay.grid(cols[j], d0, d1)).sum(axis=1)
    dates = [cell // s for cell in cells]
    miss = np.stack([np.bincount(d, minlength=k) for d in dates], 1)  # [k, B]
    sums.miss[ix] += miss
    sums.lo[ix] = np.fmin(sums.lo[ix], lo.T)
    sums.hi[ix] = np.fmax(sums.hi[ix], hi.T)
    if moments is not None:
        moments.add(grid, g, rows[d0:d1], c, miss, cells[nf:], cells[:nf], dates[:nf], yn, scratch)
    return [lay.rows(cell, d0) if w else cell[:0] for cell, w in zip(cells, want, strict=True)]
