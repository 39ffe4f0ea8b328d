"""The leakage figure's accumulator: per-date pairwise-complete moment sums of features x targets.

The figure (``atft.data.stats``): per date, Pearson(feature, target) over the rows where both
exist (``MIN_CORR_PAIRS`` pairs at least, none on a date with +-inf in either column), then the
median over dates of its absolute value. ``Moments.add`` folds one batch (or a chunk of its
dates), given as a float32 grid ``[B, D, S]`` (B = F features then T targets, D dates, S
slots; each column date-major) whose missing cells hold their shift (``Moments.shift``, set by
``atft.data.block`` while a column is in the cache), into additive per-date sums;
``Moments.medians`` turns them into the ``[F, T]`` figures.

Why numpy and not a polars group_by: these are F x T products per row (384 on the benchmark);
as polars expressions that is six aggregations per pair, as matrix products one small matmul
per date (``bench/bench_check_data.py --stages`` measures it).

The sums (X / Y: shifted feature / target values, exact zeros where missing; per date):

* ``sxy = Y X``, ``sx = 1 X`` and ``sy = Y 1`` by one batched matmul ``[1 | Y] [X | 1]`` per
  chunk of dates (float64, a row of ones between the features and the targets), ``sq = X^2 1``
  / ``Y^2 1`` (squares of every column, ``vecdot``);
* restricted to the pairs by sparse corrections, taken at the missing cells only (``bincount``
  by date and feature): where target t is missing, the feature values (``csx``, ``csxx``);
  where feature f is missing, the target values (``csy``, ``csyy``) and whether t is missing
  too (``both``); pairs ``n = rows - missing f - missing t + both``.

Why these equal per-date ``pl.corr`` to ~1e-12 however the rows are batched:

* fixed shifts: each (date, column) is shifted by its first finite minimum, kept for the whole
  pass, so the sums of all batches simply add; shifted values are of the size of the date's
  spread, not of its level (no catastrophic cancellation in ``sxx - sx^2 / n`` for a column
  far from 0), and a constant column sums to exact zeros (zero variance: no correlation);
* float64: the shift is a float32 value, so ``value - shift`` of two float32 is exact in float64;
* missing cells are set to their shift, i.e. exact zeros once shifted;
* a +-inf value makes the sums of its (date, column) non-finite: no correlation there.

Memory: the grid (one batch, or one worker's chunk of its dates, as float32), one chunk of ``chunk_bytes`` float64, the corrections'
gathers (the missing cells) and eleven per-date arrays, six of them ``[G, F, T]`` float64
(2,000 dates x 4 targets x 96 features: 37 MB).
"""

from __future__ import annotations

import numpy as np

from atft.data.batches import Scratch

MIN_CORR_PAIRS = 3  # fewer (feature, target) pairs on a date: no correlation that day
CHUNK_BYTES = 2 * 2**20  # one float64 chunk of dates of the grid (stays in the cache; 1-8 MiB measured)

_FT = ("sxy", "csx", "csxx", "csy", "csyy", "both")  # [G, T, F] sums


class Moments:
    """Additive per-date moment sums of F features x T targets (module docstring).

    Arrays grow as dates appear (``reserve``; capacity doubles) and are indexed by the caller's
    date ids; ``add`` calls for distinct dates may run concurrently.
    """

    def __init__(self, nf: int, nt: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.nf, self.nt, self.nb = nf, nt, nf + nt
        self.chunk_bytes = chunk_bytes
        self.shift_of = np.zeros((0, self.nb))  # [G, B] NaN: not set yet
        self.rows = np.zeros(0, np.int64)  # [G]
        self.miss = np.zeros((0, self.nb), np.int64)  # [G, B]
        self.sq = np.zeros((0, self.nb))  # [G, B] squares
        self.sx = np.zeros((0, nf))  # [G, F]
        self.sy = np.zeros((0, nt))  # [G, T]
        self.ft = {k: np.zeros((0, nt, nf)) for k in _FT}  # [G, T, F]

    def reserve(self, n: int) -> None:
        """Room for date ids ``0..n-1`` (call before ``add``, which may run on several threads)."""
        if n <= self.shift_of.shape[0]:
            return
        cap = max(n, 2 * self.shift_of.shape[0], 64)

        def grown(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, a.dtype)
            out[: a.shape[0]] = a
            return out

        self.shift_of = grown(self.shift_of, np.nan)
        self.rows, self.miss, self.sq, self.sx, self.sy = (grown(a) for a in (self.rows, self.miss, self.sq,
                                                                               self.sx, self.sy))
        self.ft = {k: grown(v) for k, v in self.ft.items()}

    def shift(self, ix: np.ndarray | slice, j: int, lo: np.ndarray) -> np.ndarray:
        """Column ``j``'s shift on the dates ``ix`` (``date_index``): fixed at its first finite
        minimum ``lo`` (0 while none is met: every value so far missing, nothing to shift).

        Shapes:
            ix / lo ``[D]`` -> ``[D]`` float64.
        """
        cur = self.shift_of[ix, j]  # a view when the dates are consecutive
        fresh = np.isnan(cur) & np.isfinite(lo)
        if fresh.any():
            cur[fresh] = lo[fresh]
            self.shift_of[ix, j] = cur
        return np.where(np.isnan(cur), 0.0, cur)

    @np.errstate(invalid="ignore", over="ignore")  # +-inf cells (infinite_values' finding): NaN products
    def add(self, grid: np.ndarray, gl: np.ndarray, rows: np.ndarray, c: np.ndarray, miss: np.ndarray,
            tcells: list[np.ndarray], fpos: list[np.ndarray], fdates: list[np.ndarray], yn: np.ndarray,
            scratch: Scratch) -> None:
        """Fold one batch (or a chunk of its dates) in.

        Args:
            grid: the values, per column date-major, missing cells and padding set to their
                shift ``c`` (``shift``), i.e. exact zeros once shifted.
            gl: date id of each grid date; rows: real rows per grid date; miss: missing cells
                per grid date and column.
            tcells: per target, its missing cells, flat ``d * S + s``, sorted (date-major).
            fpos, fdates: per feature, its missing cells (flat ``d * S + s``) and their dates.
            yn: the shifted targets, NaN where missing; scratch: the pass's buffers.

        Shapes:
            grid ``[B, D, S]`` float32, gl / rows ``[D]``, c / miss ``[D, B]``, tcells T x
            ``[q_t]``, fpos / fdates F x ``[q_f]``, yn ``[T, D * S]``.
        """
        nb, nd, s = grid.shape
        if not nd:
            return
        ix, nf = date_index(gl), self.nf
        self.rows[ix] += rows
        self.miss[ix] += miss
        whole = miss[:, nf:].T == rows  # [T, D] target missing on every row of the date
        sparse = [p[~w[p // s]] for p, w in zip(tcells, whole, strict=True)]
        sx, sq = self._products(grid, gl, c, sparse, scratch)
        for t, w in enumerate(whole):  # a legitimate tail: the pairs lose the date's whole sums
            if w.any():
                self.ft["csx"][gl[w], t] += sx[w]
                self.ft["csxx"][gl[w], t] += sq[w, :nf]
        self._feature_missing(yn, gl, fpos, fdates)

    def _products(self, grid: np.ndarray, gl: np.ndarray, c: np.ndarray, tcells: list[np.ndarray],
                  scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
        """``[1 | Y] [X | 1]`` by batched matmuls and the squares, over chunks of dates in float64
        (in the cache: the feature values where a target is missing are taken there,
        ``_target_missing``); returns this batch's feature sums ``[D, F]`` and squares ``[D, B]``."""
        nb, nd, s = grid.shape
        nf, nt = self.nf, self.nt
        step = max(1, self.chunk_bytes // (8 * (nb + 1) * s))
        prod = np.empty((nd, nt + 1, nf + 1))
        sq = np.empty((nb + 1, nd))
        cb = c.T  # [B, D]
        bounds = [np.searchsorted(p, np.arange(0, nd + step, step) * s) for p in tcells]
        taken: list[list[np.ndarray]] = [[] for _ in tcells]
        for i, d0 in enumerate(range(0, nd, step)):
            d1 = min(nd, d0 + step)
            # [F + 1 + T, k, S]: shifted features, a row of ones, shifted targets (each row date-major)
            b = scratch("products", (nb + 1) * (d1 - d0) * s, np.float64).reshape(nb + 1, d1 - d0, s)
            b[nf] = 1.0
            for src, dst, cs in ((grid[:nf, d0:d1], b[:nf], cb[:nf, d0:d1, None]),
                                 (grid[nf:, d0:d1], b[nf + 1:], cb[nf:, d0:d1, None])):
                np.copyto(dst, src)  # float32 -> float64, then the exact shift
                np.subtract(dst, cs, out=dst)
            np.matmul(b[nf:].transpose(1, 0, 2), b[: nf + 1].transpose(1, 2, 0), out=prod[d0:d1])  # [k, 1 + T, F + 1]
            np.vecdot(b, b, out=sq[:, d0:d1])  # [F + 1 + T, k]
            for t, p in enumerate(tcells):
                q = p[bounds[t][i]:bounds[t][i + 1]]
                if q.size:
                    taken[t].append(b[:nf, q // s - d0, q % s].T)  # [q, F] shifted feature values
        ix = date_index(gl)
        self.ft["sxy"][ix] += prod[:, 1:, :nf]
        self.sx[ix] += prod[:, 0, :nf]
        self.sy[ix] += prod[:, 1:, nf]
        sq = np.delete(sq, nf, axis=0).T  # [D, B]
        self.sq[ix] += sq
        for t, p in enumerate(tcells):
            if taken[t]:
                self._target_missing(gl, t, p // s, np.concatenate(taken[t]))
        return prod[:, 0, :nf], sq

    def _target_missing(self, gl: np.ndarray, t: int, d: np.ndarray, x: np.ndarray) -> None:
        """Where target t is missing (not a whole date), the features' pairs lose x and x^2
        (``csx``, ``csxx``): the feature values ``x`` summed over each date's run of cells.

        Shapes:
            d ``[q]`` grid date of each cell (sorted), x ``[q, F]``.
        """
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        g = gl[d[starts]]
        self.ft["csx"][g, t] += np.add.reduceat(x, starts, axis=0)
        self.ft["csxx"][g, t] += np.add.reduceat(x * x, starts, axis=0)

    def _feature_missing(self, yn: np.ndarray, gl: np.ndarray, fpos: list[np.ndarray],
                         fdates: list[np.ndarray]) -> None:
        """Where feature f is missing, its pairs lose y and y^2 (``csy``, ``csyy``) of every target;
        ``both`` counts the cells where the target is missing too. Sums by (date, feature)
        (``np.bincount``) of the shifted targets ``yn`` (NaN where missing), gathered in
        date order (sequential reads)."""
        p = np.concatenate(fpos)
        if not p.size:
            return
        nd, nf = gl.size, self.nf
        key = np.concatenate(fdates) * nf + np.repeat(np.arange(nf), [q.size for q in fpos])  # (date, feature)
        ix, ft, size = date_index(gl), self.ft, nd * nf
        for t in range(self.nt):
            y = yn[t][p]
            miss = np.isnan(y)
            if miss.any():
                y[miss] = 0.0
                ft["both"][ix, t] += np.bincount(key[miss], minlength=size).reshape(nd, nf)
            ft["csy"][ix, t] += np.bincount(key, y, minlength=size).reshape(nd, nf)
            ft["csyy"][ix, t] += np.bincount(key, y * y, minlength=size).reshape(nd, nf)

    @np.errstate(invalid="ignore", over="ignore")
    def medians(self, n_dates: int) -> np.ndarray:
        """Median over dates of |Pearson| per (feature, target), dates without one skipped.

        Shapes:
            -> ``[F, T]`` float64, NaN where no date has a correlation.
        """
        g = min(n_dates, self.shift_of.shape[0])
        if not g:
            return np.full((self.nf, self.nt), np.nan)
        nf, ft = self.nf, {k: v[:g] for k, v in self.ft.items()}  # [G, T, F]
        miss = self.miss[:g].astype(np.float64)
        pairs = (self.rows[:g, None] - miss[:, nf:])[:, :, None] - miss[:, None, :nf] + ft["both"]
        rho = pearson(pairs, self.sx[:g, None, :] - ft["csx"], self.sy[:g, :, None] - ft["csy"],
                      self.sq[:g, None, :nf] - ft["csxx"], self.sq[:g, nf:, None] - ft["csyy"], ft["sxy"])
        return nan_median(np.abs(rho), axis=0).T


def date_index(ids: np.ndarray) -> np.ndarray | slice:
    """``ids`` as a slice when they are consecutive (a view instead of a gather / scatter)."""
    if ids.size and ids[-1] - ids[0] == ids.size - 1 and (ids.size < 2 or (np.diff(ids) == 1).all()):
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def pearson(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
            sxy: np.ndarray) -> np.ndarray:
    """Pearson correlation from (shifted) pairwise-complete moment sums; NaN where fewer than
    ``MIN_CORR_PAIRS`` pairs, a zero variance or a non-finite sum (+-inf in the data).

    Shapes:
        all six broadcast together, e.g. ``[G, F, T]`` float64 -> the same.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = 1.0 / np.maximum(n, 1.0)
        vx, vy = sxx - sx * sx * inv, syy - sy * sy * inv
        ok = ((n >= MIN_CORR_PAIRS) & (vx > 1e-12 * sxx) & (vy > 1e-12 * syy)
              & np.isfinite(vx) & np.isfinite(vy) & np.isfinite(sxy))
        rho = np.clip((sxy - sx * sy * inv) / np.sqrt(np.maximum(vx * vy, 1e-300)), -1.0, 1.0)
    return np.where(ok, rho, np.nan)


def nan_median(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median along ``axis`` ignoring NaN (mean of the two middle values; NaN when none), no warning.

    Shapes:
        a: any, e.g. ``[G, F, T]`` -> ``a`` without ``axis``, e.g. ``[F, T]``.
    """
    s = np.sort(a, axis=axis)  # NaN sorts last
    k = np.expand_dims((~np.isnan(a)).sum(axis), axis)
    lo = np.take_along_axis(s, np.maximum(k - 1, 0) // 2, axis)
    hi = np.take_along_axis(s, k // 2 - (k == 0), axis)  # k == 0: any index, masked below
    return np.squeeze(np.where(k > 0, (lo + hi) / 2, np.nan), axis)
