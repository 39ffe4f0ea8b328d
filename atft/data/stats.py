"""The one streaming pass behind ``atft check-data``: per-date statistics of a frame of any size.

Design. ``_scan`` reads the columns a ``_Plan`` names (``_Accumulator.query``: a date key, the
code, the *block* of features then targets as float32, the *exact* columns on their own dtype,
the 1-day target) in row ranges (``_ranges``: whole parquet row groups for a file opened by
``atft.health.data.as_lazy``, else about ``SCAN_BATCH_BYTES`` of values rounded to whole runs of
the data's order). ``_batches`` collects the next range in a worker thread (polars decodes it in
its own pool) while this thread folds the current one into the ``_Accumulator`` with numpy;
``finish`` turns the sums into per-date arrays in date order (``_Scan``). Every statistic is a
mergeable per-date sum, so batches may cut dates anywhere and hold rows in any order; the checks
in ``atft.health.data`` only read the result.

Accumulators (dates get dense ids as they appear, ``_Ids``; the arrays grow by doubling):

* per (date, block column): rows, null/NaN count, float32 min / max, +-inf count;
* per (date, code): a seen bit and one target-missing bit per target, a bitmap from which
  ``finish`` derives distinct stocks, duplicates and the legitimate tail (``_last_rows``);
* per date, the exact columns (integer or float64 features, float columns outside the block):
  min / max / +-inf count by a polars group_by of each batch, merged at the end;
* the 1-day bound: count of ``|r| > bound`` and of non-missing values;
* leakage: per (date, feature f, target t) the pairwise-complete moment sums ``n, sx, sy, sxx,
  syy, sxy``, from which ``_pearson`` gives the correlation and ``nan_median`` its median over
  dates.

Each batch's block is laid out date-major ``[B, D, S]`` (B block columns, D dates, S slots, see
``_grid``): a view of the rows when they already form such a grid ((Code, Date)- or
Date-sorted), else a gather padded with NaN. The moment products are batched matmuls over a
few dates at a time (``SCAN_BLOCK_BYTES`` of float64, so they stay in cache).

Why the moment sums are exact enough to equal per-date ``pl.corr`` to ~1e-12 however the rows are
batched:

* Fixed shifts. Each (date, column) gets one shift, its minimum in the first batch where that
  is finite, and keeps it for the whole pass, so the sums of all batches simply add (no
  re-centering). Shifted values are of the size of the date's spread, not of its level, so
  ``sxx - sx^2 / n`` does not cancel catastrophically for a column far from 0, and a constant
  column sums to exact zeros (zero variance: no correlation, as ``pl.corr``).
* float64. The shift is itself a float32 value, so ``value - shift`` of two float32 is exact in
  float64 (unless their exponents differ by more than 28), and products and sums are float64.
* Missing cells as exact zeros. A missing cell is set to its shift, i.e. 0 once shifted, so a
  dense product of a shifted feature X with the shifted target Y or the target's presence mask
  My sums over the complete pairs only: ``sxy = X Y``, ``sx = X My``, ``sxx = X^2 My``.
* Sparse corrections. The target sums ``sy, syy`` must drop the rows where the feature is
  missing: they are the sums over all rows minus those over the (few) missing feature cells,
  scattered with ``np.add.at`` in steps of ``SCAN_CELLS``; the pair count is
  ``n = rows - missing f - missing t + both missing``.
* A +-inf value makes the sums of its (date, column) non-finite: no correlation there.

Memory is bounded by the batches, not the frame: two batches of about ``SCAN_BATCH_BYTES`` (the
one being folded and the one being decoded; whole row groups for a parquet file), one
date-major float32 copy of a batch's block with its NaN mask, a ``SCAN_BLOCK_BYTES`` float64
block, missing-cell temporaries of ``SCAN_CELLS`` per target, and the per-date sums: ``[G, B]``
counts and extremes, two ``[G, N]`` bitmaps (G dates, N codes; uint8 for up to 8 targets) and,
with leakage, six float64 sums ``[G, F, T]`` (2,000 dates x 96 features x 4 targets: 37 MB;
capacity doubles as dates appear).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from atft.data.source import resolve_files

ENGINE: Literal["auto", "in-memory", "streaming"] = "streaming"  # batches: a file larger than RAM still checks
MIN_CORR_PAIRS = 3  # fewer (feature, target) pairs on a date: no correlation that day
SCAN_BATCH_ROWS: int | None = None  # rows per batch (None: whole row groups, about SCAN_BATCH_BYTES)
SCAN_BATCH_BYTES = 64 * 2**20  # values per batch (two batches are in memory at a time)
SCAN_BLOCK_BYTES = 2 * 2**20  # one float64 block of the moment products (stays in cache)
SCAN_CELLS = 2**20  # missing cells handled per vectorized step (bounds the temporaries)
LEAK_DATE_BLOCK = 32  # dates per batched moment product (pairwise_date_corr)


# ----------------------------------------------------------------------------- what one pass measures


@dataclass
class _Plan:
    """What one pass measures (``atft.health.data._plan``, ``leakage_medians``).

    The block (features, then targets) is read as float32; ``exact`` columns on their own dtype.
    """

    date: str
    code: str | None  # None: no distinct stocks, duplicates or legitimate tail
    feats: list[str]
    targets: list[str]
    horizons: list[int]  # per target (legitimate tail); [] -> no target statistics
    exact: list[str]  # on their own dtype: lo/hi of non-float32 features, +-inf of floats outside the block
    floats: list[str]  # every float column (+-inf counts), schema order
    leak: bool  # per-date feature x target moment sums
    ret: tuple[str, float] | None  # 1-day target and the |r| bound


@dataclass
class _Scan:
    """What one pass measured, per date in date order (a null date first).

    Shapes:
        G dates, B = F + T block columns (F features, T targets); each field's shape is noted.
    """

    plan: _Plan
    dates: pl.Series  # [G]
    rows: np.ndarray  # [G] int64
    stocks: np.ndarray  # [G] distinct codes (zeros without a code column)
    miss: np.ndarray  # [G, B] null/NaN count
    lo: np.ndarray  # [G, B] float32 min / max over the non-missing values (NaN: none)
    hi: np.ndarray
    inf: dict[str, np.ndarray]  # float column -> [G] +-inf count
    exact: pl.DataFrame | None  # G rows: lo:/hi:/i: of the exact columns
    target_miss: np.ndarray | None  # [G, T] outside the legitimate tail (None: compute with polars)
    target_rows: np.ndarray | None
    ret: tuple[int, int]  # (|r| > bound, non-missing 1-day targets)
    leak: np.ndarray | None  # [F, T] median over dates of |Pearson|


# ----------------------------------------------------------------------------- the pass: batches in, sums out


def _scan(lf: pl.LazyFrame, plan: _Plan) -> _Scan:
    """One streaming pass over ``lf``: polars decodes batches, numpy folds them (``_Accumulator``)."""
    acc = _Accumulator(plan, lf.collect_schema())
    query = acc.query(lf)
    width = 4 * (len(plan.feats) + len(plan.targets)) + 8 * (len(plan.exact) + 3)  # bytes per row, about
    for batch in _batches(query, _ranges(lf, query, max(1024, SCAN_BATCH_BYTES // width))):
        acc.add(batch)
    return acc.finish()


def _batches(lf: pl.LazyFrame, ranges: list[tuple[int, int]]) -> Iterator[pl.DataFrame]:
    """``lf`` in row ranges (``slice``, which polars pushes down to the parquet row groups), the
    next one collected in a worker thread while the caller folds this one.

    At most two batches are in memory. (``LazyFrame.collect_batches`` decodes ahead without bound
    when its consumer is slower than the decoder, pola-rs/polars#28569: 1.7 GB here on 5M rows.)
    """
    if not ranges:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        def collect(k: int) -> pl.DataFrame:
            return lf.slice(*ranges[k]).collect(engine=ENGINE)

        ahead = pool.submit(collect, 0)
        for k in range(len(ranges)):
            batch = ahead.result()
            if k + 1 < len(ranges):
                ahead = pool.submit(collect, k + 1)
            yield batch


_ROW_GROUPS: list[tuple[pl.LazyFrame, list[int]]] = []  # frames from as_lazy(path): parquet row-group sizes


def remember_row_groups(lf: pl.LazyFrame, path: str | Path) -> None:
    """Note that ``lf`` scans the parquet file(s) at ``path``, so that its batches are whole row
    groups (``_ranges``); the last 8 such frames are kept."""
    _ROW_GROUPS[:] = [*_ROW_GROUPS[-7:], (lf, _parquet_row_groups(path))]


def _parquet_row_groups(path: str | Path) -> list[int]:
    """Row counts of the parquet row groups behind ``path``, in scan order (footers only)."""
    import pyarrow.parquet as pq

    return [m.row_group(i).num_rows for f in resolve_files(path) for m in [pq.read_metadata(f)]
            for i in range(m.num_row_groups)]


def _ranges(lf: pl.LazyFrame, query: pl.LazyFrame, rows: int) -> list[tuple[int, int]]:
    """Batch row ranges of about ``rows`` rows: whole parquet row groups when ``lf`` came from
    ``as_lazy(path)`` (polars decodes a whole row group for any slice of it); otherwise ``rows``
    rounded to whole runs of the data's order (``_aligned``)."""
    groups = next((g for f, g in _ROW_GROUPS if f is lf), None)
    n = lf.select(pl.len()).collect(engine=ENGINE).item()  # parquet: from the footers
    if groups is None or sum(groups) != n or SCAN_BATCH_ROWS is not None:
        step = SCAN_BATCH_ROWS or _aligned(query, rows)
        return [(s, min(step, n - s)) for s in range(0, n, step)]
    out: list[tuple[int, int]] = []
    start = size = 0
    for g in groups:
        if size and size + g > rows:
            out.append((start, size))
            start, size = start + size, 0
        size += g
    return [*out, (start, size)] if size else out


def _aligned(query: pl.LazyFrame, rows: int) -> int:
    """``rows`` rounded down to whole runs of the data's order (a stock's dates when sorted by
    (Code, Date), a date's stocks when sorted by Date), so regular batches need no gather."""
    keys, _ = _keys(query.select("_d").slice(0, rows).collect(engine=ENGINE).to_series())
    step = np.diff(keys)
    ends = np.flatnonzero(step < 0) if (step < 0).any() else np.flatnonzero(step > 0)
    return rows if not ends.size else max(int(ends[0]) + 1, rows // (int(ends[0]) + 1) * (int(ends[0]) + 1))


# ----------------------------------------------------------------------------- the accumulator


class _Accumulator:
    """Additive per-date sums of one streaming pass (``_scan``; the module docstring has the design).

    ``add`` folds a batch in, ``finish`` returns the ``_Scan``. Arrays grow as dates appear and
    are indexed by date id (``dates``), in the order the dates were met:

    * ``a``: per date ``rows``; per (date, block column) ``miss``, ``inf``, ``lo``, ``hi``; with
      leakage the ``shift`` and the moment sums ``sy1, syy1 [G, T]``, ``sxy, sx, sxx [G, F, T]``;
    * ``fm``: the missing-feature corrections ``by, byy, both`` ``[T, F, G]``;
    * ``seen`` / ``tmiss``: per (date, code + 1) the row bit and its target-missing bits
      (distinct stocks, duplicates, the legitimate tail);
    * ``exact``: per-batch polars aggregates of the exact columns; ``ret``: the 1-day counts.

    The leakage sums per (date, feature f, target t), with X / Y the shifted feature / target
    (0 where missing) and My the target's presence mask (why this is exact: module docstring):

    * ``sxy = X Y``, ``sx = X My``, ``sxx = X^2 My`` (batched matmuls, ``_products``);
    * ``sy = sy1 - by``, ``syy = syy1 - byy``: target sums over all rows minus those over the
      cells where f is missing (sparse, ``_feature_missing``);
    * pairs ``n = rows - missing f - missing t + both`` (``both``: f and t missing).
    """

    def __init__(self, plan: _Plan, schema: pl.Schema) -> None:
        self.plan, self.schema = plan, schema
        self.nf, self.nt = len(plan.feats), len(plan.targets)
        self.nb = nb = self.nf + self.nt
        self.dates = _Ids()
        self.date_cats = None if _int_key(schema[plan.date]) else pl.Categories.random()
        self.code_cats = pl.Categories.random()
        self._alive = [pl.Series([], dtype=pl.Categorical(c)) for c in (self.date_cats, self.code_cats) if c]
        shapes: dict[str, tuple[tuple[int, ...], Any, float]] = {
            "rows": ((), np.int64, 0), "miss": ((nb,), np.int64, 0), "inf": ((nb,), np.int64, 0),
            "lo": ((nb,), np.float32, np.nan), "hi": ((nb,), np.float32, np.nan)}
        if plan.leak:
            nf, nt = self.nf, self.nt
            shapes |= {"shift": ((nb,), np.float64, np.nan), "sy1": ((nt,), np.float64, 0),
                       "syy1": ((nt,), np.float64, 0)}
            shapes |= {k: ((nf, nt), np.float64, 0) for k in ("sxy", "sx", "sxx")}
        self._fill = {k: f for k, (_, _, f) in shapes.items()}
        self.a = {k: np.full((0, *shp), f, t) for k, (shp, t, f) in shapes.items()}
        # [T, F, dates] (dates last: the corrections scatter into runs of consecutive dates)
        self.fm = {k: np.zeros((self.nt, self.nf, 0)) for k in ("by", "byy", "both")} if plan.leak else {}
        # one target-missing bit per target; None (over 64 targets): the tail is left to polars
        self.bits = next((t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if 8 * np.dtype(t).itemsize >= self.nt), None)
        self.seen = np.zeros((0, 0), np.uint8)  # [dates, codes + 1]: 1 where a (date, code) row exists
        self.tmiss = np.zeros((0, 0), self.bits or np.uint8)  # its target-missing bits
        self.exact: list[pl.DataFrame] = []
        self.ret = [0, 0]
        self._bufs: dict[str, np.ndarray] = {}

    def query(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """The columns one pass reads: date key, code, block (float32), exact columns, 1-day target."""
        p = self.plan
        date = pl.col(p.date)
        if self.date_cats is not None:
            date = date.cast(pl.String).cast(pl.Categorical(self.date_cats))
        cols = [date.alias("_d")]
        if p.code is not None:
            cols.append(pl.col(p.code).cast(pl.String).cast(pl.Categorical(self.code_cats)).alias("_c"))
        cols += [pl.col(c).cast(pl.Float32).alias(f"_b{j}") for j, c in enumerate(p.feats + p.targets)]
        cols += [pl.col(c).alias(f"_e{j}") for j, c in enumerate(p.exact)]
        if p.ret is not None:
            cols.append(pl.col(p.ret[0]).alias("_r"))
        return lf.select(cols)

    def _buf(self, name: str, size: int, dtype: Any) -> np.ndarray:
        """A reused flat buffer (no page faults per batch)."""
        b = self._bufs.get(name)
        if b is None or b.size < size:
            b = self._bufs[name] = np.empty(size, dtype)
        return b[:size]

    def add(self, b: pl.DataFrame) -> None:
        """Fold one batch into the sums."""
        if b.height == 0:
            return
        g = self.dates(*_keys(b.get_column("_d")))  # [R] date ids
        n = self.dates.n
        self.a = {k: _grow(v, n, 0, self._fill[k]) for k, v in self.a.items()}
        self.fm = {k: _grow(v, n, 2, 0) for k, v in self.fm.items()}
        cnt = np.bincount(g, minlength=n)
        self.a["rows"][:n] += cnt
        cols = [[c.to_numpy() for c in b.get_column(f"_b{j}").get_chunks()] for j in range(self.nb)]  # no copy
        if self.plan.code is not None:
            self._codes(g, b.get_column("_c"), [np.concatenate(p) for p in cols[self.nf:]])
        if self.plan.exact:
            self.exact.append(self._exact_aggs(b, g))
        if self.plan.ret is not None:  # |r| > bound over the non-missing values, on their own dtype
            y = b.get_column("_r").to_numpy()  # nulls -> NaN
            valid = y.size if y.dtype.kind in "iub" else int(np.count_nonzero(~np.isnan(y)))
            self.ret[0] += int(np.count_nonzero(np.abs(y) > self.plan.ret[1]))
            self.ret[1] += valid
        if self.nb:
            self._block(g, cnt, cols)

    def _codes(self, g: np.ndarray, codes: pl.Series, targets: list[np.ndarray]) -> None:
        """Set the (date, code) row bits and their target-missing bits (code 0: a null code).

        Shapes:
            g ``[R]`` date ids, codes ``[R]``, targets: ``T`` x ``[R]`` float32 (NaN missing).
        """
        k, null = _keys(codes)
        c = k + 1  # 0: null code
        if null is not None:
            c[null] = 0
        n, m = self.dates.n, int(c.max()) + 1
        self.seen = _grow(_grow(self.seen, n, 0, 0), m, 1, 0)
        self.seen[g, c] = 1
        if self.bits is not None and self.plan.horizons:
            self.tmiss = _grow(_grow(self.tmiss, n, 0, 0), m, 1, 0)
            bits = np.zeros(g.size, self.bits)
            for t, y in enumerate(targets):
                bits |= np.isnan(y).astype(self.bits) << self.bits(t)
            self.tmiss[g, c] = bits

    def _exact_aggs(self, b: pl.DataFrame, g: np.ndarray) -> pl.DataFrame:
        """This batch's per-date ``lo:`` / ``hi:`` / ``i:`` of the exact columns, by a polars
        group_by on the date id ``_g`` (merged across batches in ``finish``)."""
        aggs = []
        for j, c in enumerate(self.plan.exact):
            x, dtype = pl.col(f"_e{j}"), self.schema[c]
            if c in self.plan.feats:
                v = x.fill_nan(None) if dtype.is_float() else x
                aggs += [v.min().alias(f"lo:{c}"), v.max().alias(f"hi:{c}")]
            if dtype.is_float():
                aggs.append(x.is_infinite().sum().cast(pl.Int64).alias(f"i:{c}"))
        cols = [pl.col(f"_e{j}") for j in range(len(self.plan.exact))]
        return b.select(cols).with_columns(_g=pl.Series(g)).group_by("_g").agg(aggs)

    def _block(self, g: np.ndarray, cnt: np.ndarray, cols: list[list[np.ndarray]]) -> None:
        """Per date: null/NaN counts, min / max and +-inf of the float32 block; then the moments.

        Column by column (each stays in cache), the block is laid out date-major in ``v``
        ``[B, D, S]`` (D dates of this batch, S slots). With leakage on, missing cells are set to
        the (date, column) shift, so that they are exact zeros once shifted; ``_products`` then
        runs over date blocks, and the cells where a feature is missing are corrected for after.
        """
        present = np.flatnonzero(cnt)
        local = np.zeros(cnt.size, np.int64)
        local[present] = np.arange(present.size)
        kind, order, s, idx, pad = _grid(local[g], present.size)
        gl = present[order]  # date id of each grid position
        ix, nd, nb, nf = _index(gl), gl.size, self.nb, self.nf
        real = cnt[gl]  # [D] rows per grid date (the rest of its S slots is NaN padding)
        v = self._buf("v", nb * nd * s, np.float32).reshape(nb, nd, s)
        nan = self._buf("nan", v.size, np.bool_).reshape(nb, nd, s)
        lo, hi = np.empty((nb, nd), np.float32), np.empty((nb, nd), np.float32)
        miss = np.empty((nb, nd), np.int64)
        a, leak = self.a, self.plan.leak
        cellsets: list[tuple[np.ndarray, np.ndarray]] = []  # per column: missing cells d * S + s, dates
        for j in range(nb):
            vj = v[j]  # [D, S]
            if kind == "slot" and all(p.size % nd == 0 for p in cols[j]):  # chunks of whole runs
                _transpose_runs(cols[j], vj, lo[j], hi[j])
            else:
                col = cols[j][0] if len(cols[j]) == 1 else np.concatenate(cols[j])
                if kind == "slot":
                    np.copyto(vj, col.reshape(s, nd).T)
                elif idx is None:
                    np.copyto(vj.reshape(-1), col)
                else:
                    np.take(col, idx, out=vj.reshape(-1))
                    vj.reshape(-1)[pad] = np.nan
                np.fmin.reduce(vj, axis=1, out=lo[j])
                np.fmax.reduce(vj, axis=1, out=hi[j])
            pos = np.flatnonzero(np.isnan(vj, out=nan[j]))  # padding included
            cellsets.append((pos, pos // s))
            miss[j] = np.bincount(cellsets[-1][1], minlength=nd) - (s - real)
            if np.isinf(lo[j]).any() or np.isinf(hi[j]).any():
                a["inf"][ix, j] += np.isinf(vj).sum(axis=1)
        a["miss"][ix] += miss.T
        a["lo"][ix] = np.fmin(a["lo"][ix], lo.T)
        a["hi"][ix] = np.fmax(a["hi"][ix], hi.T)
        if leak:
            cur = a["shift"][ix]  # [D, B]
            fresh = np.isnan(cur) & np.isfinite(lo.T)
            cur[fresh] = lo.T[fresh]
            a["shift"][ix] = cur
            c = np.where(np.isnan(cur), 0.0, cur)  # no value met yet: nothing to shift
            c32 = c.astype(np.float32)  # exact: minima of float32 values
            fcells = []
            for j, (pos, dpos) in enumerate(cellsets):
                v[j].reshape(-1)[pos] = c32[dpos, j]
                if j < nf:
                    keep = ~pad[pos] if pad is not None else slice(None)
                    fcells.append((pos[keep], dpos[keep]))
            self._products(v, nan, gl, c)
            self._feature_missing(v, nan, gl, c, fcells)

    def _products(self, v: np.ndarray, nan: np.ndarray, gl: np.ndarray, c: np.ndarray) -> None:
        """Per date, batched matmuls over a cache-sized float64 copy of a few dates:
        ``X [Y | My]`` (cross sums and the feature sums where the target exists) and
        ``X^2 My`` (square sums where the target exists).

        Shapes:
            v, nan ``[B, D, S]`` (v: missing cells = shift), gl ``[D]``, c ``[D, B]``.
        """
        a, nf, nt, nb = self.a, self.nf, self.nt, self.nb
        nd, s = v.shape[1], v.shape[2]
        step = max(1, SCAN_BLOCK_BYTES // (8 * (2 * nb + nt) * s))
        x = self._buf("x", (nb + nt) * step * s, np.float64).reshape(nb + nt, step, s)  # [X | Y | My]
        sq = self._buf("sq", nf * step * s, np.float64).reshape(nf, step, s)
        sxy = self._buf("sxy", nd * nf * 2 * nt, np.float64).reshape(nd, nf, 2 * nt)
        sxx = self._buf("sxx", nd * nf * nt, np.float64).reshape(nd, nf, nt)
        for d0 in range(0, nd, step):
            d1 = min(nd, d0 + step)
            xb, sb = x[:, :d1 - d0], sq[:, :d1 - d0]  # [B + T, k, S], [F, k, S]
            np.copyto(xb[:nb], v[:, d0:d1])
            xb[:nb] -= c[d0:d1].T[:, :, None]
            np.logical_not(nan[nf:, d0:d1], out=xb[nb:], casting="unsafe")
            np.square(xb[:nf], out=sb)
            right = xb[nf:].transpose(1, 2, 0)  # [k, S, 2T]: Y | My
            np.matmul(xb[:nf].transpose(1, 0, 2), right, out=sxy[d0:d1])
            np.matmul(sb.transpose(1, 0, 2), right[..., nt:], out=sxx[d0:d1])
        ix = _index(gl)
        a["sxy"][ix] += sxy[..., :nt]
        a["sx"][ix] += sxy[..., nt:]
        a["sxx"][ix] += sxx

    def _feature_missing(self, v: np.ndarray, nan: np.ndarray, gl: np.ndarray, c: np.ndarray,
                         fcells: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """The target sums; then the cells where a feature is missing: its pairs lose the target
        value (``by``), its square (``byy``); ``both`` counts those where the target is missing too.

        Shapes:
            v, nan ``[B, D, S]``, gl ``[D]``, c ``[D, B]``; fcells: per feature (cells ``[q]``, dates ``[q]``).
        """
        nf, nt = self.nf, self.nt
        cap = self.fm["by"].shape[2]
        y0 = self._buf("y0", v[nf:].size, np.float64).reshape(v[nf:].shape)
        np.copyto(y0, v[nf:])
        y0 -= c[:, nf:].T[:, :, None]  # [T, D, S] shifted targets, 0 where missing
        ix = _index(gl)
        self.a["sy1"][ix] += y0.sum(axis=2).T
        self.a["syy1"][ix] += np.einsum("tds,tds->dt", y0, y0)
        yf, nant = y0.reshape(nt, -1), nan[nf:].reshape(nt, -1)
        sizes = np.array([p.size for p, _ in fcells])
        for j0, j1 in _chunks(sizes, SCAN_CELLS // max(nt, 1)):
            if not sizes[j0:j1].sum():
                continue
            pos = np.concatenate([p for p, _ in fcells[j0:j1]])
            dates = gl[np.concatenate([d for _, d in fcells[j0:j1]])]
            base = np.repeat(np.arange(j0, j1) * cap, sizes[j0:j1]) + dates
            key = ((np.arange(nt) * (nf * cap))[:, None] + base).ravel()  # [T * q] into [T, F, dates]
            y = np.take(yf, pos, axis=1).ravel()
            np.add.at(self.fm["by"].reshape(-1), key, y)
            np.add.at(self.fm["byy"].reshape(-1), key, y * y)
            both = np.flatnonzero(np.take(nant, pos, axis=1).ravel())  # the target is missing too
            np.add.at(self.fm["both"].reshape(-1), key[both], 1.0)

    def finish(self) -> _Scan:
        """Per-date arrays in date order, the legitimate tail, the leakage medians.

        Shapes:
            -> ``_Scan`` with G = the dates met (a null date first).
        """
        p, n, a = self.plan, self.dates.n, self.a
        dtype = self.schema[p.date]
        keys = self.dates.keys()
        if self.date_cats is None:
            dates = pl.Series(p.date, keys, pl.Int64).cast(dtype)
        else:
            dates = pl.Series(p.date, [self.date_cats[int(k)] for k in keys], pl.String).cast(dtype)
        if self.dates.null_id is not None:
            dates = dates.scatter(self.dates.null_id, None)
        order = dates.arg_sort(nulls_last=False).to_numpy()
        rows = a["rows"][:n]
        seen = self.seen[:n]
        stocks = seen.sum(axis=1, dtype=np.int64) if seen.size else np.zeros(n, np.int64)
        tm = tr = None
        if p.horizons and p.code is not None and self.bits is not None and not (rows - stocks).any():
            tm, tr = self._tail(order, rows, seen)
        exact = None
        if p.exact:
            if self.exact:
                e = pl.concat(self.exact).group_by("_g").agg(
                    [pl.col(c).min() if c.startswith("lo:") else pl.col(c).max() if c.startswith("hi:")
                     else pl.col(c).sum() for c in self.exact[0].columns if c != "_g"])
            else:  # no rows
                e = pl.DataFrame({"_g": []}, schema={"_g": pl.Int64}).with_columns(
                    [pl.lit(None, self.schema[c]).alias(f"{k}:{c}") for c in p.exact if c in p.feats for k in ("lo", "hi")]
                    + [pl.lit(0, pl.Int64).alias(f"i:{c}") for c in p.exact if self.schema[c].is_float()])
            exact = pl.DataFrame({"_g": order}, schema={"_g": pl.Int64}).join(e, on="_g", how="left").drop("_g")
        block = p.feats + p.targets
        inf = {c: a["inf"][:n, block.index(c)][order] for c in p.floats if c in block and c not in p.exact}
        if exact is not None:
            inf |= {c: exact[f"i:{c}"].to_numpy() for c in p.floats if f"i:{c}" in exact.columns}
        leak = self._leak(rows) if p.leak else None

        def o(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[order]
        return _Scan(p, dates[order], rows[order], stocks[order], a["miss"][:n][order], a["lo"][:n][order],
                     a["hi"][:n][order], inf, exact, o(tm), o(tr), (self.ret[0], self.ret[1]), leak)

    def _tail(self, order: np.ndarray, rows: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target missing / eligible counts per date outside each stock's last h rows (no duplicates).

        Shapes: -> ``[G, T]`` each, date-id order.
        """
        n, nf = self.dates.n, self.nf
        miss = self.a["miss"][:n, nf:].astype(np.int64)
        tm, tr = miss.copy(), np.repeat(rows[:, None], self.nt, axis=1)
        if self.dates.null_id is not None:  # no rank on a null date: neither missing nor eligible
            tm[self.dates.null_id] = tr[self.dates.null_id] = 0
        dated = order[order != self.dates.null_id] if self.dates.null_id is not None else order
        gi, ci, rk = _last_rows(seen[dated], max(self.plan.horizons))
        bits, uint = self.tmiss[dated[gi], ci], self.tmiss.dtype.type
        for t, h in enumerate(self.plan.horizons):
            sel = rk <= h
            tr[dated, t] -= np.bincount(gi[sel], minlength=dated.size)
            tm[dated, t] -= np.bincount(gi[sel], (bits[sel] >> uint(t)) & 1, minlength=dated.size).astype(np.int64)
        return tm, tr

    def _leak(self, rows: np.ndarray) -> np.ndarray:
        """Median over dates of |Pearson| from the sums: n = rows - missing f - missing t + both missing."""
        n, nf, a = self.dates.n, self.nf, {k: v[: self.dates.n] for k, v in self.a.items()}
        miss = a["miss"].astype(np.float64)
        fm = {k: v[:, :, :n].transpose(2, 1, 0) for k, v in self.fm.items()}  # [G, F, T]
        pairs = (rows[:, None] - miss[:, :nf])[:, :, None] - miss[:, None, nf:] + fm["both"]
        rho = _pearson(pairs, a["sx"], a["sy1"][:, None, :] - fm["by"], a["sxx"], a["syy1"][:, None, :] - fm["byy"],
                       a["sxy"])
        return nan_median(np.abs(rho), axis=0) if n else np.full((nf, self.nt), np.nan)


# ----------------------------------------------------------------------------- keys and batch layouts


def _int_key(dtype: pl.DataType) -> bool:
    """Dates of this dtype are keyed by their physical integers (others via a Categorical)."""
    return dtype.is_integer() or dtype.is_temporal() or dtype == pl.Boolean


def _keys(s: pl.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """Physical integer keys ``[R]`` of a column and its null mask (None: no nulls).

    No polars compute when there are no nulls: small polars calls on this thread queue behind the
    next batch's decoding in polars' thread pool.
    """
    phys = s.to_physical()
    if not s.null_count():
        return phys.to_numpy().astype(np.int64, copy=False), None
    return phys.fill_null(0).to_numpy().astype(np.int64, copy=False), s.is_null().to_numpy()


class _Ids:
    """Dense ids ``0..n-1`` for the distinct integer keys met batch by batch (null is one more key)."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, np.int64)  # distinct keys, sorted, and the id of each
        self._sorted_ids = np.empty(0, np.int64)
        self._chunks: list[np.ndarray] = []  # distinct keys in id order
        self.n = 0
        self.null_id: int | None = None

    def __call__(self, keys: np.ndarray, null: np.ndarray | None) -> np.ndarray:
        """Shapes: keys ``[R]`` int64, null ``[R]`` bool or None -> ids ``[R]`` int64."""
        k = keys if null is None else keys[~null]
        pos = np.searchsorted(self._sorted, k)
        if self._sorted.size:
            hit = self._sorted[np.minimum(pos, self._sorted.size - 1)] == k
        else:
            hit = np.zeros(k.size, bool)
        if not hit.all():
            self._add(np.unique(k[~hit]))
            pos = np.searchsorted(self._sorted, k)
        ids = np.empty(keys.size, np.int64)
        if null is None:
            ids[:] = self._sorted_ids[pos]
            return ids
        ids[~null] = self._sorted_ids[pos]
        if self.null_id is None and null.any():
            self.null_id = self.n
            self._chunks.append(np.zeros(1, np.int64))
            self.n += 1
        ids[null] = self.null_id if self.null_id is not None else 0
        return ids

    def _add(self, new: np.ndarray) -> None:
        merged = np.concatenate([self._sorted, new])
        order = np.argsort(merged, kind="stable")
        self._sorted = merged[order]
        self._sorted_ids = np.concatenate([self._sorted_ids, np.arange(self.n, self.n + new.size)])[order]
        self._chunks.append(new)
        self.n += new.size

    def keys(self) -> np.ndarray:
        """The distinct keys in id order ``[n]`` (0 at ``null_id``)."""
        return np.concatenate(self._chunks) if self._chunks else np.empty(0, np.int64)


def _grid(loc: np.ndarray, n_dates: int) -> tuple[str, np.ndarray, int, np.ndarray | None, np.ndarray | None]:
    """How a batch's rows form a dense ``[dates, slots]`` grid (no copy when they already do).

    ``slot``: S runs holding the same dates in the same order (a (Code, Date)-sorted panel), row
    ``s * D + d``. ``date``: D runs of S rows, one date each (Date-sorted), row ``d * S + s``.
    ``gather``: any other order; rows are gathered date-major, padded with NaN to the largest date.

    Shapes:
        loc ``[R]`` (the batch's date index 0..D-1) -> (kind, date index of each grid position
        ``[D]``, slots S, gather index ``[D * S]`` or None, padding mask ``[D * S]`` or None).
    """
    cnt = np.bincount(loc, minlength=n_dates)
    s = int(cnt.max())
    if (cnt == s).all():
        m = loc.reshape(s, n_dates)
        if (m == m[0]).all():
            return "slot", m[0].copy(), s, None, None
        m = loc.reshape(n_dates, s)
        if (m == m[:, :1]).all():
            return "date", m[:, 0].copy(), s, None, None
    order = np.argsort(loc, kind="stable")
    starts = np.cumsum(cnt) - cnt
    cell = loc[order] * s + np.arange(loc.size) - np.repeat(starts, cnt)
    idx = np.zeros(n_dates * s, np.int64)
    idx[cell] = order
    pad = np.ones(n_dates * s, bool)
    pad[cell] = False
    return "gather", np.arange(n_dates), s, idx, pad


def _transpose_runs(parts: list[np.ndarray], dst: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Slot-major chunks of one column into the date-major ``dst``, min / max over the slots.

    Shapes:
        parts: ``[slots_k * D]`` each (whole runs of the D dates) -> dst ``[D, S]``, lo / hi ``[D]``.
    """
    lo.fill(np.nan)
    hi.fill(np.nan)
    s0 = 0
    for part in parts:
        src = part.reshape(-1, dst.shape[0])  # [slots_k, D]
        np.copyto(dst[:, s0:s0 + src.shape[0]], src.T)
        np.fmin(lo, np.fmin.reduce(src, axis=0), out=lo)
        np.fmax(hi, np.fmax.reduce(src, axis=0), out=hi)
        s0 += src.shape[0]


def _last_rows(seen: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last ``h`` rows of every code: (date index, code, rank; 1 = the code's last row).

    Looks back from the last date in windows that grow 4x until every code has ``h`` rows in its
    window (or the window is the whole panel), so a complete panel reads only its last dates.

    Shapes:
        seen ``[G, N]`` (dates in order, codes; 1 where the row exists) -> three ``[k]`` arrays.
    """
    g_n = seen.shape[0]
    todo, w = np.arange(seen.shape[1]), h
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(np.empty(0, np.int64),) * 3]
    while todo.size:
        lo = max(0, g_n - w)
        sub = seen[lo:, todo]  # [w, codes]
        rank = np.cumsum(sub[::-1], axis=0, dtype=np.int32)[::-1]  # rows on or after this date
        done = (rank[0] >= h) | (lo == 0)
        gi, k = np.nonzero((sub != 0) & (rank <= h) & done)
        out.append((gi + lo, todo[k], rank[gi, k]))
        todo, w = todo[~done], 4 * w
    gi, ci, rk = (np.concatenate([o[i] for o in out]) for i in range(3))
    return gi, ci, rk


def _grow(a: np.ndarray, n: int, axis: int, fill: float) -> np.ndarray:
    """``a`` with room for ``n`` along ``axis`` (capacity doubles), new entries ``fill``."""
    if a.shape[axis] >= n:
        return a
    shape = list(a.shape)
    shape[axis] = max(n, 2 * a.shape[axis], 64)
    out = np.full(shape, fill, a.dtype)
    out[tuple(slice(0, k) for k in a.shape)] = a
    return out


def _index(ids: np.ndarray) -> np.ndarray | slice:
    """``ids`` as a slice when they are consecutive (a view instead of a gather / scatter)."""
    if ids.size and ids[-1] - ids[0] == ids.size - 1 and (ids.size < 2 or (np.diff(ids) == 1).all()):
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def _chunks(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges ``[j0, j1)`` whose ``sizes`` add up to at most ``limit`` (at least one each)."""
    out, j0, tot = [], 0, 0
    for j, k in enumerate(sizes.tolist()):
        if j > j0 and tot + k > limit:
            out.append((j0, j))
            j0, tot = j, 0
        tot += k
    return [*out, (j0, sizes.size)] if sizes.size else out


# ----------------------------------------------------------------------------- correlation from moment sums


def _pearson(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
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


def _shifted(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed mask and float64 values minus the date's column minimum, 0 where missing.

    Shapes:
        v: ``[B, S, c]`` float32 (NaN missing) -> (mask, shifted) ``[B, S, c]`` float64.
    """
    m = ~np.isnan(v)
    with np.errstate(invalid="ignore"):
        low = np.fmin.reduce(v, axis=1, keepdims=True).astype(np.float64)  # [B, 1, c]
    low[~np.isfinite(low)] = 0.0
    return m.astype(np.float64), np.where(m, v - low, 0.0)


def pairwise_date_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per date, pairwise-complete Pearson correlation of every x column with every y column.

    By moment products, for all pairs at once: with masks ``Mx, My`` and min-shifted values
    ``X, Y`` (0 where missing, float64), ``[Sx | Sxy] = X^T [My | Y]``, ``Sxx = (X^2)^T My``
    and ``[n | Sy | Syy] = Mx^T [My | Y | Y^2]`` (batched matmuls over ``LEAK_DATE_BLOCK`` dates).
    NaN where fewer than ``MIN_CORR_PAIRS`` pairs or a zero variance (what ``pl.corr`` gives, to
    float64 rounding). The streaming check (``leakage_medians``) gets the same sums batch by batch.

    Shapes:
        x: ``[G, S, c]``, y: ``[G, S, t]`` float32 (NaN missing) -> ``[G, c, t]`` float64.
    """
    t = y.shape[2]
    out = np.empty((x.shape[0], x.shape[2], t))
    for b0 in range(0, x.shape[0], LEAK_DATE_BLOCK):
        b = slice(b0, b0 + LEAK_DATE_BLOCK)
        mx, xs = _shifted(x[b])
        my, ys = _shifted(y[b])
        xt = xs.transpose(0, 2, 1)  # [B, c, S]
        p1 = xt @ np.concatenate([my, ys], 2)  # [B, c, 2t]: Sx | Sxy
        p3 = mx.transpose(0, 2, 1) @ np.concatenate([my, ys, ys * ys], 2)  # [B, c, 3t]: n | Sy | Syy
        out[b] = _pearson(p3[..., :t], p1[..., :t], p3[..., t:2 * t], (xt * xt) @ my, p3[..., 2 * t:], p1[..., t:])
    return out


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


def leakage_medians(lf: pl.LazyFrame, date: str, feats: list[str], targets: list[str]) -> np.ndarray:
    """Median over dates of |per-date Pearson(feature, target)|, dates without a value skipped.

    One streaming pass (``_scan``) over just these columns: per batch, the moment sums of every
    (feature, target, date) are added to per-date accumulators, so the peak memory is one batch
    plus ``[dates, F, T]`` sums, never the frame. Values are read as float32 (exact for float32
    data; integers above 2^24 round). A date needs ``MIN_CORR_PAIRS`` pairs and no +-inf.

    Args:
        lf: the frame; date: its date column; feats / targets: the columns to correlate.

    Shapes:
        -> ``[len(feats), len(targets)]`` float64, NaN where no date has a correlation.
    """
    plan = _Plan(date, None, list(feats), list(targets), [], [], [], bool(feats) and bool(targets), None)
    leak = _scan(lf, plan).leak
    return leak if leak is not None else np.full((len(feats), len(targets)), np.nan)

