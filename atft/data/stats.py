"""Per-date statistics of a dataset, measured in ONE pass: what ``atft check-data`` and
``atft filter-data`` read (``DatasetStats``, built by ``build_stats``).

``build_stats(data, cfg)`` reads a parquet path, a LazyFrame or a DataFrame once, in batches of
bounded size (``atft.data.batches``: polars decodes them one ahead in a worker thread), and folds
each batch into additive per-date sums (``atft.data.fold``; chunks of its dates on ``workers``
threads), so a file larger than RAM is measured in a few batches of memory (two decoded, the
float32 grid of one, per-thread copies) plus the per-date sums (2,000 dates x 100 columns: about
50 MB). Columns are chosen by THE column-role rule (``atft.data.schema``). Which engine computes
what, and why:

* numpy, per batch: rows, per (date, column) null/NaN counts, min / max and +-inf counts of the
  features and targets (read as float32), by reductions over the batch's date-major grid; the
  leakage moment sums by small matmuls (``atft.data.moments``). A polars ``group_by`` over the
  whole file measured 2.5x the I/O floor for the counts and min / max alone (6.2 s vs 2.5 s on
  5M rows x 100 float32 columns), per batch 0.11 s against numpy's 0.035 s;
* polars ``group_by`` per batch: min / max of integer and float64 features on their own dtype
  and +-inf of float columns outside the features (few columns; exact on every dtype);
* per (date, code) bitmaps (``atft.data.stockdates``): distinct stocks and the legitimate tail;
  with duplicate (Code, Date) rows the tail is polars' ``legit_tail`` (ordinal rank) instead,
  and the failing examples (duplicates, 1-day returns over the bound) are polars queries.

Definitions (design.md section 7):

* missing = null, or NaN for float columns (polars ``null_count`` ignores NaN);
* legitimate tail of target h: the last h rows of each stock (``legit_tail``); these rows are
  neither missing nor eligible in the target counts;
* leakage: per date, Pearson(feature, target) over the rows where both exist (at least
  ``MIN_CORR_PAIRS``; none for a column on a date where it has +-inf), the median over dates
  of its absolute value; values read as float32 (exact for float32 data);
* 1-day bound: non-missing 1-day targets with ``|r| > health.max_abs_return_1d``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from atft.config import Config
from atft.data.batches import ENGINE, Source, batch_ranges, open_source, read_batches
from atft.data.block import GRID_BYTES
from atft.data.fold import Fold, Plan
from atft.data.moments import CHUNK_BYTES, MIN_CORR_PAIRS
from atft.data.schema import legit_tail, missing, selection_problems, target_columns
from atft.horizons import Horizons

__all__ = ["BATCH_BYTES", "CHUNK_BYTES", "ENGINE", "GRID_BYTES", "MIN_CORR_PAIRS", "PARTS", "WORKERS",
           "DatasetStats", "build_stats", "leakage_medians", "plan_for"]

PARTS = frozenset({"rows", "targets", "ret", "leak"})  # what build_stats can measure
BATCH_BYTES = 64 * 2**20  # values per batch (two batches are in memory at a time)
WORKERS = min(4, os.cpu_count() or 1)  # threads folding chunks of dates
N_EXAMPLES = 5  # failing cases kept per statistic

Data = pl.LazyFrame | pl.DataFrame | str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetStats:
    """What one pass measured (module docstring for the definitions).

    ``per_date`` holds one row per date (date order, a null date first) and the columns
    ``<date>``, ``len`` (rows), ``stocks`` (distinct codes) and

    * per feature f: ``m:f`` (null/NaN count), ``k:f`` (non-missing), ``lo:f`` / ``hi:f``
      (min / max over the non-missing values, null when none; float32 for float32 features,
      the column's own dtype otherwise);
    * per float column c: ``i:c`` (+-inf count);
    * per target t: ``tm:t`` / ``te:t`` (missing / eligible rows outside the legitimate tail).

    ``per_stock`` (``build_stats(per_stock=True)``) holds one row per code (a null code first):
    ``<code>``, ``len``, ``m:f`` per feature and ``tm:t`` / ``te:t`` per target, over the rows
    whose date is not in ``skip_dates`` (the tail still ranked over all rows).

    Shapes:
        per_date ``[G, 3 + 4 F + C + 2 T]`` (G dates, F features, C float columns, T targets),
        leak ``[F, T]``, per_stock ``[N, 2 + F + 2 T]``.
    """

    schema: pl.Schema  # of the data read
    date_col: str
    code_col: str
    features: tuple[str, ...]  # the numeric columns of THE feature selection (F)
    targets: tuple[str, ...]  # the configured targets present, horizon order (T)
    floats: tuple[str, ...]  # every float column, schema order (C)
    parts: frozenset[str]  # what was measured (PARTS)
    per_date: pl.DataFrame
    leak: np.ndarray | None  # median over dates of |Pearson|, NaN where no date has one
    ret_1d: tuple[str, int, int] | None  # (1-day target, |r| > bound count, non-missing count)
    ret_examples: tuple[tuple[Any, ...], ...] = ()  # (code, date, r), largest r first
    duplicate_examples: tuple[tuple[Any, ...], ...] = ()  # (code, date, rows), key order
    per_stock: pl.DataFrame | None = None

    def row_stats(self) -> pl.DataFrame:
        """``per_date`` without the target columns: date, len, then m:/k:/lo:/hi: per feature,
        i: per float column, stocks (the frame of ``atft.health.dataset_checks.date_stats``)."""
        order = [self.date_col, "len", *(f"{k}:{f}" for f in self.features for k in ("m", "k", "lo", "hi")),
                 *(f"i:{c}" for c in self.floats), "stocks"]
        return self.per_date.select([c for c in order if c in self.per_date.columns])


def plan_for(schema: pl.Schema, cfg: Config, parts: Collection[str] = PARTS, per_stock: bool = False,
             skip_dates: Collection[object] = ()) -> Plan:
    """What ``build_stats`` reads for ``parts``: the columns of THE selection rule only."""
    unknown = set(parts) - PARTS
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; known: {sorted(PARTS)}")
    d, hz = cfg.data, Horizons.from_config(cfg)
    sel, problems = selection_problems(schema, cfg)
    want_f = bool({"rows", "leak"} & set(parts)) or per_stock
    feats = [f for f in sel if f in schema and schema[f].is_numeric()] if want_f else []
    tgts = target_columns(schema, cfg) if {"targets", "leak"} & set(parts) or per_stock else []
    floats = [n for n, t in schema.items() if t.is_float()] if "rows" in parts else []
    in_block = {c for c in (*feats, *tgts) if schema[c] == pl.Float32}
    exact = list(dict.fromkeys([f for f in feats if schema[f] != pl.Float32 and "rows" in parts]
                               + [c for c in floats if c not in in_block]))
    t1 = hz.targets[hz.index(1)] if 1 in hz.horizons else None
    with_code = bool({"rows", "targets"} & set(parts)) or per_stock
    return Plan(d.date_col, d.code_col if with_code else None, tuple(feats), tuple(tgts),
                tuple(hz.horizons[hz.targets.index(t)] for t in tgts) if "targets" in parts or per_stock else (),
                tuple(exact), tuple(floats), "leak" in parts and not problems and bool(feats) and bool(tgts),
                (t1, cfg.health.max_abs_return_1d) if t1 is not None and t1 in schema and "ret" in parts else None,
                per_stock, tuple(skip_dates))


def build_stats(data: Data, cfg: Config, parts: Collection[str] = PARTS, *, batch_rows: int | None = None,
                batch_bytes: int = BATCH_BYTES, grid_bytes: int = GRID_BYTES, chunk_bytes: int = CHUNK_BYTES,
                workers: int = WORKERS, per_stock: bool = False,
                skip_dates: Collection[object] = ()) -> DatasetStats:
    """The ``DatasetStats`` of ``data`` in one pass over the columns ``parts`` need.

    Args:
        data: a parquet file / directory / glob (batches are whole row groups), a LazyFrame or
            a DataFrame (batches of whole runs of the data's order).
        parts: any of ``PARTS``: "rows" (per-date row and feature statistics), "targets"
            (target counts outside the tail), "ret" (the 1-day bound), "leak" (leakage).
        batch_rows: rows per batch (None: about ``batch_bytes`` of values, rounded as above).
        grid_bytes, workers: a batch is folded in chunks of dates of about ``grid_bytes`` of
            float32 on ``workers`` threads (``atft.data.block``).
        chunk_bytes: float64 working set of the leakage products (``atft.data.moments``).
        per_stock, skip_dates: also count per code, leaving out the rows of ``skip_dates``.

    Raises:
        DataError: unreadable data, or no code / date column.
    """
    src = open_source(data, cfg.data.code_col, cfg.data.date_col)
    schema = src.lf.collect_schema()
    fold = _run(src, plan_for(schema, cfg, parts, per_stock, skip_dates), batch_rows, batch_bytes, grid_bytes,
                chunk_bytes, workers)
    return _finish(fold, src, cfg, frozenset(parts))


def leakage_medians(data: pl.LazyFrame | pl.DataFrame, date: str, feats: list[str], targets: list[str], *,
                    batch_rows: int | None = None, grid_bytes: int = GRID_BYTES, chunk_bytes: int = CHUNK_BYTES,
                    workers: int = WORKERS) -> np.ndarray:
    """Median over dates of |per-date Pearson(feature, target)| (module docstring), one pass
    over just these columns.

    Shapes:
        -> ``[len(feats), len(targets)]`` float64, NaN where no date has a correlation.
    """
    plan = Plan(date, None, tuple(feats), tuple(targets), (), (), (), bool(feats) and bool(targets), None)
    fold = _run(Source(data.lazy()), plan, batch_rows, BATCH_BYTES, grid_bytes, chunk_bytes, workers)
    if fold.moments is None:
        return np.full((len(feats), len(targets)), np.nan)
    return fold.moments.medians(fold.dates.n)


def _run(src: Source, plan: Plan, batch_rows: int | None, batch_bytes: int, grid_bytes: int, chunk_bytes: int,
         workers: int) -> Fold:
    """The pass: batches of ``src`` (``batch_rows`` rows each, or about ``batch_bytes``) folded in,
    chunks of dates on ``workers`` threads."""
    with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        fold = Fold(plan, src.lf.collect_schema(), chunk_bytes, grid_bytes, pool, workers)
        query = fold.query(src.lf)
        if batch_rows is not None:
            n = src.lf.select(pl.len()).collect(engine=ENGINE).item()
            ranges = [(s, min(batch_rows, n - s)) for s in range(0, n, max(1, batch_rows))]
        else:
            ranges = batch_ranges(src, query, max(1024, batch_bytes // fold.bytes_per_row()))
        engine = "in-memory" if src.row_groups is not None and batch_rows is None else ENGINE
        for batch in read_batches(query, ranges, engine):
            fold.add(batch)
    return fold


# ----------------------------------------------------------------------------- the pass's results


def _finish(fold: Fold, src: Source, cfg: Config, parts: frozenset[str]) -> DatasetStats:
    """Per-date frame in date order, tail counts, leakage medians, examples, per-stock frame."""
    p, n, schema = fold.plan, fold.dates.n, fold.schema
    dates = fold.date_values()
    order = dates.arg_sort(nulls_last=False).to_numpy()
    u32, rows = pl.UInt32, fold.rows[:n]
    stocks = fold.stock_dates.stocks(n) if fold.stock_dates is not None else np.zeros(n, np.int64)
    exact = fold.exact_frame(order)
    cols: list[pl.Series] = [dates[order], pl.Series("len", rows[order], u32), pl.Series("stocks", stocks[order], u32)]
    for j, f in enumerate(p.feats):
        m = fold.miss[:n, j][order]
        cols += [pl.Series(f"m:{f}", m, u32), pl.Series(f"k:{f}", rows[order] - m, u32)]
        if exact is not None and f"lo:{f}" in exact.columns:  # not float32: its own dtype
            cols += [exact[f"lo:{f}"], exact[f"hi:{f}"]]
        else:
            cols += [pl.Series(f"lo:{f}", fold.lo[:n, j][order]).fill_nan(None),
                     pl.Series(f"hi:{f}", fold.hi[:n, j][order]).fill_nan(None)]
    block = p.feats + p.targets
    for c in p.floats:
        if exact is not None and f"i:{c}" in exact.columns:
            cols.append(exact[f"i:{c}"].fill_null(0).cast(u32))
        else:
            cols.append(pl.Series(f"i:{c}", fold.inf[:n, block.index(c)][order], u32))
    dup = bool((rows - stocks).any()) and p.code is not None
    per_date = pl.DataFrame(cols)
    if p.horizons:
        per_date = per_date.hstack(_target_counts(fold, src, order, dup))
    ret = None
    ret_ex: tuple[tuple[Any, ...], ...] = ()
    if p.ret is not None:
        ret = (p.ret[0], fold.ret[0], fold.ret[1])
        if fold.ret[0]:
            t, y = p.ret[0], pl.col(p.ret[0]).fill_nan(None)
            ret_ex = tuple(src.lf.filter(y.abs() > p.ret[1]).select(cfg.data.code_col, p.date, t)
                           .sort(t, descending=True).head(N_EXAMPLES).collect(engine=ENGINE).rows())
    dup_ex: tuple[tuple[Any, ...], ...] = ()
    if dup:
        code, date = cfg.data.code_col, p.date
        dup_ex = tuple(src.lf.group_by(code, date).len().filter(pl.col("len") > 1).sort(code, date)
                       .head(N_EXAMPLES).collect(engine=ENGINE).rows())
    return DatasetStats(
        schema, p.date, cfg.data.code_col, p.feats, tuple(target_columns(schema, cfg)), p.floats, parts, per_date,
        fold.moments.medians(n) if fold.moments is not None else None, ret, ret_ex, dup_ex,
        _per_stock(fold, src, order, dup) if p.per_stock else None)


def _target_counts(fold: Fold, src: Source, order: np.ndarray, dup: bool) -> pl.DataFrame:
    """Per date (``order``): ``tm:t`` / ``te:t``, from the (date, code) bitmaps, or by polars'
    ``legit_tail`` where duplicate rows make "the last h rows" depend on the row order."""
    p, n, nf = fold.plan, fold.dates.n, fold.nf
    sd = fold.stock_dates
    if sd is None or dup or sd.bits is None:
        dates = fold.date_values()[order].to_frame()
        return dates.join(_polars_tail_counts(src.lf, p, p.date), on=p.date, how="left",
                          nulls_equal=True, maintain_order="left").drop(p.date)
    null = fold.dates.null_id
    dated = order[order != null] if null is not None else order
    tm, te = sd.tail_counts(dated, list(p.horizons), fold.rows[:n], fold.miss[:n, nf:])
    return pl.DataFrame([pl.Series(f"{k}:{t}", a[order, j], pl.UInt32) for j, t in enumerate(p.targets)
                         for k, a in (("tm", tm), ("te", te))])


def _polars_tail_counts(lf: pl.LazyFrame, p: Plan, by: str, skip: tuple[object, ...] = ()) -> pl.DataFrame:
    """``tm:t`` / ``te:t`` grouped by ``by`` (the date or the code), the tail by ``legit_tail``."""
    assert p.code is not None
    schema = lf.collect_schema()
    tails = [legit_tail(h, p.code, p.date).alias(f"_tail:{t}") for h, t in zip(p.horizons, p.targets, strict=True)]
    agg = [e for t in p.targets for e in (
        (missing(t, schema[t]) & ~pl.col(f"_tail:{t}")).sum().cast(pl.UInt32).alias(f"tm:{t}"),
        (~pl.col(f"_tail:{t}")).sum().cast(pl.UInt32).alias(f"te:{t}"))]
    q = lf.select(p.code, p.date, *p.targets).with_columns(tails)
    if skip:
        q = q.filter(~pl.col(p.date).is_in(list(skip)).fill_null(False))
    return q.group_by(by).agg(agg).collect(engine=ENGINE)


def _per_stock(fold: Fold, src: Source, order: np.ndarray, dup: bool) -> pl.DataFrame:
    """Per code (a null code first): rows, missing feature cells, target counts outside the tail,
    over the dates not skipped."""
    p = fold.plan
    assert p.code is not None and fold.stock_dates is not None
    null = fold.dates.null_id
    dated = order[order != null] if null is not None else order
    skip = fold.skip_flags()
    n = fold.stock_rows.size
    codes = fold.code_values(n).alias(p.code)
    cols = [codes, pl.Series("len", fold.stock_rows, pl.UInt32)]
    cols += [pl.Series(f"m:{f}", fold.stock_miss[:, j], pl.UInt32) for j, f in enumerate(p.feats)]
    out = pl.DataFrame(cols)
    if dup or fold.stock_dates.bits is None:
        counts = _polars_tail_counts(src.lf, p, p.code, p.skip_dates)
        return out.join(counts, on=p.code, how="left", nulls_equal=True, maintain_order="left").fill_null(0)
    _, tm, te = fold.stock_dates.stock_counts(dated, ~skip[dated], list(p.horizons))  # [>= n, T]
    return out.hstack([pl.Series(f"{k}:{t}", a[:n, j], pl.UInt32) for j, t in enumerate(p.targets)
                       for k, a in (("tm", tm), ("te", te))])
