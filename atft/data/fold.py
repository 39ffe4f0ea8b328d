"""One batch at a time into additive per-date sums: the engine behind ``atft.data.stats.build_stats``.

``Fold.query`` names what one pass reads (a date key ``_d``, the code ``_c`` as a string,
the *block* ``_b{j}`` of features then targets as float32, the *exact* columns ``_e{j}`` on
their own dtype, the 1-day target ``_r``); ``Fold.add`` folds one collected batch in:

* per date: rows (numpy ``bincount`` of dense date ids, ``atft.data.batches.DateIds``);
* per (date, block column): null/NaN count, float32 min / max, +-inf count, by numpy reductions
  over the batch's date-major grid, chunks of dates on a thread pool (``atft.data.block``);
* per date, the exact columns (integer / float64 features: min / max on their own dtype; float
  columns outside the block: +-inf counts) by a polars ``group_by`` of each batch, merged at the
  end (few columns: polars is exact on every dtype and fast enough there);
* per (date, code) the row and target-missing bits (``atft.data.stockdates.StockDates``);
* the 1-day bound counts; per code the missing feature cells (``per_stock``);
* the leakage moment sums (``atft.data.moments.Moments``) from the same grid.

Every statistic is a mergeable sum, so batches may cut dates anywhere and hold rows in any order.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import polars as pl

from atft.data.batches import DateIds, Scratch, int_key, layout_of, physical_keys
from atft.data.block import GRID_BYTES, BlockSums, fold_block
from atft.data.moments import CHUNK_BYTES, Moments
from atft.data.stockdates import StockDates


@dataclass(frozen=True)
class Plan:
    """What one pass measures (``atft.data.stats.plan_for``)."""

    date: str
    code: str | None  # None: no distinct stocks, duplicates, legitimate tail or per-stock counts
    feats: tuple[str, ...]  # F block features (float32)
    targets: tuple[str, ...]  # T block targets (float32)
    horizons: tuple[int, ...]  # h per target; () -> no target statistics
    exact: tuple[str, ...]  # on their own dtype: lo/hi of non-float32 features, +-inf of floats outside the block
    floats: tuple[str, ...]  # every float column (+-inf counts), schema order
    leak: bool  # per-date feature x target moment sums
    ret: tuple[str, float] | None  # 1-day target and the |r| bound
    per_stock: bool = False  # per-code counts (atft filter-data)
    skip_dates: tuple[object, ...] = ()  # dates left out of the per-code counts


class Fold:
    """The additive per-date sums of one pass (module docstring). Arrays are indexed by date id
    (``dates``, in the order met) and grow by doubling."""

    def __init__(self, plan: Plan, schema: pl.Schema, chunk_bytes: int = CHUNK_BYTES,
                 grid_bytes: int = GRID_BYTES, pool: Executor | None = None, workers: int = 1) -> None:
        self.plan, self.schema = plan, schema
        self.grid_bytes, self.pool, self.workers = grid_bytes, pool, workers  # chunks of dates (atft.data.block)
        self.nf, self.nt = len(plan.feats), len(plan.targets)
        self.nb = self.nf + self.nt
        self.dates = DateIds()
        self.date_cats = None if int_key(schema[plan.date]) else pl.Categories.random()
        self.code_cats = pl.Categories.random()
        self._alive = [pl.Series([], dtype=pl.Categorical(c)) for c in (self.date_cats, self.code_cats) if c]
        self.rows = np.zeros(0, np.int64)  # [G]
        self.miss = np.zeros((0, self.nb), np.int64)  # [G, B]
        self.inf = np.zeros((0, self.nb), np.int64)
        self.lo = np.zeros((0, self.nb), np.float32)  # NaN: no value
        self.hi = np.zeros((0, self.nb), np.float32)
        self.exact: list[pl.DataFrame] = []
        self.ret = [0, 0]
        self.stock_dates = StockDates(self.nt) if plan.code is not None else None
        self.moments = Moments(self.nf, self.nt, chunk_bytes) if plan.leak else None
        self.stock_rows = np.zeros(0, np.int64)  # [N] per code (per_stock), kept dates only
        self.stock_miss = np.zeros((0, self.nf), np.int64)  # [N, F]
        self._skip = np.zeros(0, bool)  # per date id: left out of the per-code counts
        self.scratch = Scratch()

    def query(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """The columns one pass reads (module docstring)."""
        p = self.plan
        date = pl.col(p.date)
        if self.date_cats is not None:
            date = date.cast(pl.String).cast(pl.Categorical(self.date_cats))
        cols = [date.alias("_d")]
        if p.code is not None:
            cols.append(pl.col(p.code).cast(pl.String).alias("_c"))  # ids by runs (_codes)
        cols += [pl.col(c).cast(pl.Float32).alias(f"_b{j}") for j, c in enumerate(p.feats + p.targets)]
        cols += [pl.col(c).alias(f"_e{j}") for j, c in enumerate(p.exact)]
        if p.ret is not None:
            cols.append(pl.col(p.ret[0]).alias("_r"))
        return lf.select(cols)

    def bytes_per_row(self) -> int:
        """About how many bytes one row of ``query`` takes (float32 block, 8 bytes otherwise)."""
        return 4 * self.nb + 8 * (len(self.plan.exact) + 3)

    # ------------------------------------------------------------------------- one batch

    def add(self, b: pl.DataFrame) -> None:
        """Fold one batch in."""
        if b.height == 0:
            return
        g = self.dates(*physical_keys(b.get_column("_d")))  # [R] date ids
        self._grow(self.dates.n)
        cnt = np.bincount(g, minlength=self.dates.n)
        present = np.flatnonzero(cnt)  # this batch's dates, id order
        self.rows[present] += cnt[present]
        local = np.zeros(cnt.size, np.int64)
        local[present] = np.arange(present.size)
        loc = local[g]  # [R] batch-local date
        cols = [b.get_column(f"_b{j}").to_numpy() for j in range(self.nb)]  # float32, null -> NaN
        nan_rows: list[np.ndarray] = []  # per block column: its missing rows
        if self.nb:
            lay = layout_of(loc, present.size)
            gl = present[lay.dates]  # [D] date id of each grid date
            if self.moments is not None:
                self.moments.reserve(self.dates.n)
            want = [self.plan.per_stock or j >= self.nf for j in range(self.nb)]  # codes: target rows
            nan_rows = fold_block(lay, gl, cnt[gl], cols, BlockSums(self.miss, self.inf, self.lo, self.hi),
                                  self.moments, self.scratch, self.pool, self.workers, self.grid_bytes, want)
        code = self._codes(b, g, nan_rows) if self.plan.code is not None else None
        if self.plan.exact:
            self.exact.append(self._exact_aggs(b, g))
        if self.plan.ret is not None:  # |r| > bound over the non-missing values, on their own dtype
            y = b.get_column("_r").to_numpy()  # nulls -> NaN
            self.ret[0] += int(np.count_nonzero(np.abs(y) > self.plan.ret[1]))
            self.ret[1] += y.size if y.dtype.kind in "iub" else int(np.count_nonzero(~np.isnan(y)))
        if self.plan.per_stock and code is not None:
            self._stock_counts(g, code, nan_rows)

    def _codes(self, b: pl.DataFrame, g: np.ndarray, nan_rows: list[np.ndarray]) -> np.ndarray:
        """Code ids ``[R]`` (0: null code) of a batch; sets its (date, code) bits.

        The code of each run of equal codes is looked up once (a Categorical of the pass), so
        a (Code, Date)-sorted batch hashes one string per stock, not one per row.
        """
        codes = b.get_column("_c")
        run = codes.rle_id().to_numpy()  # [R] run id, 0.. in row order (after the slice: no pushdown lost)
        starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
        k, null = physical_keys(codes.gather(starts).cast(pl.Categorical(self.code_cats)))
        ids = k + 1
        if null is not None:
            ids[null] = 0
        code = ids[run]
        assert self.stock_dates is not None
        self.stock_dates.add(g, code, nan_rows[self.nf:] if self.plan.horizons else [])
        return code

    def _stock_counts(self, g: np.ndarray, code: np.ndarray, nan_rows: list[np.ndarray]) -> None:
        """Per code, over the rows of dates not skipped: rows and missing feature cells."""
        n = int(code.max()) + 1
        if self.stock_rows.size < n:
            self.stock_rows = np.concatenate([self.stock_rows, np.zeros(n - self.stock_rows.size, np.int64)])
            self.stock_miss = np.concatenate([self.stock_miss, np.zeros((n - self.stock_miss.shape[0], self.nf),
                                                                        np.int64)])
        if self._skip.size < self.dates.n:
            self._skip = self.skip_flags()
        keep = ~self._skip[g]
        self.stock_rows[:n] += np.bincount(code[keep], minlength=n)
        for f in range(self.nf):
            r = nan_rows[f][keep[nan_rows[f]]]
            self.stock_miss[:n, f] += np.bincount(code[r], minlength=n)

    def skip_flags(self) -> np.ndarray:
        """Per date id: is it one of ``plan.skip_dates``."""
        if not self.plan.skip_dates:
            return np.zeros(self.dates.n, bool)
        return self.date_values().is_in(list(self.plan.skip_dates)).fill_null(False).to_numpy()

    def _exact_aggs(self, b: pl.DataFrame, g: np.ndarray) -> pl.DataFrame:
        """This batch's per-date ``lo:`` / ``hi:`` / ``i:`` of the exact columns, by a polars
        group_by on the date id ``_g`` (merged across batches in ``exact_frame``)."""
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

    def _grow(self, n: int) -> None:
        if self.rows.size >= n:
            return
        cap = max(n, 2 * self.rows.size, 64)

        def grown(a: np.ndarray, fill: float) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, a.dtype)
            out[: a.shape[0]] = a
            return out

        self.rows, self.miss, self.inf = grown(self.rows, 0), grown(self.miss, 0), grown(self.inf, 0)
        self.lo, self.hi = grown(self.lo, np.nan), grown(self.hi, np.nan)

    # ------------------------------------------------------------------------- results

    def date_values(self) -> pl.Series:
        """The dates met, in id order ``[G]`` (null at ``dates.null_id``), on the date's dtype."""
        p, keys = self.plan, self.dates.keys()
        dtype = self.schema[p.date]
        if self.date_cats is None:
            dates = pl.Series(p.date, keys, pl.Int64).cast(dtype)
        else:
            dates = pl.Series(p.date, [self.date_cats[int(k)] for k in keys], pl.String).cast(dtype)
        if self.dates.null_id is not None:
            dates = dates.scatter(self.dates.null_id, None)
        return dates

    def code_values(self, n: int) -> pl.Series:
        """Code labels of code ids ``0..n-1`` (0: null) as strings."""
        cats = self.code_cats.to_series()
        return pl.concat([pl.Series([None], dtype=pl.String), cats.cast(pl.String)]).head(n)

    def exact_frame(self, order: np.ndarray) -> pl.DataFrame | None:
        """The exact columns' ``lo:`` / ``hi:`` / ``i:`` per date, rows in ``order`` (date ids)."""
        p = self.plan
        if not p.exact:
            return None
        if self.exact:
            e = pl.concat(self.exact).group_by("_g").agg(
                [pl.col(c).min() if c.startswith("lo:") else pl.col(c).max() if c.startswith("hi:")
                 else pl.col(c).sum() for c in self.exact[0].columns if c != "_g"])
        else:  # no rows
            e = pl.DataFrame({"_g": []}, schema={"_g": pl.Int64}).with_columns(
                [pl.lit(None, self.schema[c]).alias(f"{k}:{c}") for c in p.exact if c in p.feats for k in ("lo", "hi")]
                + [pl.lit(0, pl.Int64).alias(f"i:{c}") for c in p.exact if self.schema[c].is_float()])
        return pl.DataFrame({"_g": order}, schema={"_g": pl.Int64}).join(e, on="_g", how="left").drop("_g")

