"""The block of one batch (features then targets, float32) into per-date sums, by chunks of dates.

A batch's rows form a date-major grid (``atft.data.batches.Layout``). ``fold_block`` cuts its
dates into chunks of about ``grid_bytes`` (so that a chunk stays in the cache) and folds each
chunk, column by column: a compact copy of the column's slice (the slot layout's slice is
strided), its missing cells (``isnan``), min / max over the slots and +-inf counts by numpy
reductions; with leakage on, the column is transposed into the chunk's grid ``[k, B, S]`` that
``atft.data.moments.Moments.add`` then folds. Chunks touch distinct dates, so they run on a
thread pool (numpy releases the GIL inside its loops; polars decodes the next batch meanwhile).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from atft.data.batches import Layout, scratch
from atft.data.moments import Moments

GRID_BYTES = 8 * 2**20  # float32 grid of one chunk of dates (stays in the cache)


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
               moments: Moments | None, pool: Executor | None, grid_bytes: int = GRID_BYTES) -> list[np.ndarray]:
    """Fold one batch's block in; returns each column's missing rows (batch row numbers).

    Args:
        lay: the batch's layout; gl: date id of each grid date; rows: rows per grid date.
        cols: the block columns (float32, NaN where missing); pool: runs the chunks (None: here).

    Shapes:
        gl / rows ``[D]``, cols B x ``[R]`` -> B x ``[q_j]``.
    """
    nd, s, nb = gl.size, lay.slots, len(cols)
    step = max(1, grid_bytes // (4 * nb * max(s, 1)))
    spans = [(d0, min(nd, d0 + step)) for d0 in range(0, nd, step)]

    def run(span: tuple[int, int]) -> list[np.ndarray]:
        return _fold_chunk(lay, gl, rows, cols, sums, moments, *span)

    parts = list(pool.map(run, spans)) if pool is not None and len(spans) > 1 else [run(sp) for sp in spans]
    return [np.concatenate([p[j] for p in parts]) for j in range(nb)]


def _fold_chunk(lay: Layout, gl: np.ndarray, rows: np.ndarray, cols: list[np.ndarray], sums: BlockSums,
                moments: Moments | None, d0: int, d1: int) -> list[np.ndarray]:
    """Grid dates ``d0:d1`` of every block column (module docstring)."""
    k, s, nb = d1 - d0, lay.slots, len(cols)
    g = gl[d0:d1]
    grid = scratch("grid", k * nb * s).reshape(k, nb, s) if moments is not None else None
    lo, hi = np.empty((nb, k), np.float32), np.empty((nb, k), np.float32)
    miss = np.empty((nb, k), np.int64)
    pad = lay.pad[d0 * s:d1 * s] if lay.pad is not None else None
    cells, missing_rows = [], []
    for j, col in enumerate(cols):
        if lay.kind == "slot":  # [S, k] compact copy of the strided slice; reduced over its rows
            v = scratch("col", s * k).reshape(s, k)
            np.copyto(v, col.reshape(s, lay.dates.size)[:, d0:d1])
            sl, dl = np.divmod(np.flatnonzero(np.isnan(v)), k)
            cell = np.sort(dl * s + sl)
            axis = 0
            if grid is not None:
                np.copyto(grid[:, j], v.T)
        else:  # [k, S] grid rows (padding NaN)
            v = lay.grid(col, d0, d1)
            cell = np.flatnonzero(np.isnan(v))
            if pad is not None:
                cell = cell[~pad[cell]]
            axis = 1
            if grid is not None:
                np.copyto(grid[:, j], v)
        cells.append(cell)
        missing_rows.append(lay.rows(cell, d0))
        miss[j] = np.bincount(cell // s, minlength=k)
        np.fmin.reduce(v, axis=axis, out=lo[j])
        np.fmax.reduce(v, axis=axis, out=hi[j])
        if np.isinf(lo[j]).any() or np.isinf(hi[j]).any():
            sums.inf[g, j] += np.isinf(v).sum(axis=axis)
    sums.miss[g] += miss.T
    sums.lo[g] = np.fmin(sums.lo[g], lo.T)
    sums.hi[g] = np.fmax(sums.hi[g], hi.T)
    if moments is not None and grid is not None:
        moments.add(grid, g, rows[d0:d1], lo.T, cells, pad)
    return missing_rows
