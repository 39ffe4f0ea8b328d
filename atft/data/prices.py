"""Real prices in: a daily price panel -> backward features + forward targets (``atft build-dataset``).

Input: CSV or parquet (by extension, else by content), either

* long: ``Code, Date, Close`` plus optional ``Open, High, Low, Volume`` (and ``sector`` /
  ``market`` passed through), column names case-insensitive; or
* wide: ``Date`` plus one column per code holding close prices (empty cell = no price).

Output (sorted by Code, Date): ``Code`` (String), ``Date`` (Date), backward features
(Float32, prefix ``bk_``, computed only from prices at or before the row's date), the targets
``Close(t+h) / Close(t) - 1`` under ``data.target_template`` (Float32, null in the last h rows
of each stock).

Date range: prices after ``--end`` are never read (so no target looks past it); prices
before ``--start`` serve only as feature history (those rows are not written). The first
``LOOKBACK`` rows of each stock are dropped (warm-up: the longest backward window is not yet
full there), so every written row has every price feature defined.
Rows with a missing (null / NaN) close are dropped as "no price that day"; returns then span
the gap (one row = one trading day of that stock).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from atft.config import Config
from atft.errors import DataError
from atft.horizons import Horizons, looks_like_target
from atft.io import atomic_path

CODE, DATE, CLOSE = "Code", "Date", "Close"
OPTIONAL = ("Open", "High", "Low", "Volume")
RETURN_WINDOWS = (1, 5, 10, 20, 60)  # bk_chg_{n} = Close(t) / Close(t-n) - 1
LOG_RETURN_WINDOWS = (1, 5, 20)  # bk_logchg_{n} = log(Close(t) / Close(t-n))
VOL_WINDOWS = (5, 20, 60)  # bk_rvol_{n} = std (ddof 1) of the last n 1-day log returns
MA_WINDOWS = (5, 20, 60)  # bk_magap_{n} = Close / mean(last n closes) - 1
VOLUME_WINDOW = 20  # bk_vratio_20 = Volume / mean(last 20 volumes)
LOOKBACK = max(RETURN_WINDOWS + VOL_WINDOWS + MA_WINDOWS)  # rows of history a feature may need
CS_BASE = ("bk_chg_1", "bk_chg_5", "bk_chg_20", "bk_rvol_20", "bk_magap_20", "bk_vratio_20")
_PARQUET_MAGIC = b"PAR1"


@dataclass
class BuildSummary:
    """What ``build_dataset`` wrote."""

    rows: int
    stocks: int
    dates: int
    features: list[str]
    targets: list[str]
    first_date: dt.date | None = None
    last_date: dt.date | None = None
    dropped_missing_close: int = 0
    passthrough: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


def _scan(path: Path) -> pl.LazyFrame:
    """Lazy scan of a CSV or parquet file, detected by extension, else by the parquet magic bytes."""
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".parquet", ".pq")):
        is_parquet = True
    elif suffixes.endswith((".csv", ".txt", ".tsv", ".csv.gz")):
        is_parquet = False
    else:
        with path.open("rb") as fh:
            is_parquet = fh.read(4) == _PARQUET_MAGIC
    try:
        if is_parquet:
            lf = pl.scan_parquet(path)
        else:
            sep = "\t" if suffixes.endswith(".tsv") else ","
            lf = pl.scan_csv(path, separator=sep, infer_schema_length=None)
        lf.collect_schema()
    except Exception as exc:  # polars raises several error types for malformed files
        kind = "parquet" if is_parquet else "CSV"
        raise DataError(f"cannot read {kind} price file {path}: {exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}. Fix: pass a complete CSV "
                        "(header row, comma-separated) or parquet file.") from None
    return lf


def _numeric_or_raise(lf: pl.LazyFrame, columns: list[str], what: str) -> None:
    """DataError naming the non-numeric price columns and a few values that are not numbers."""
    schema = lf.collect_schema()
    bad = [c for c in columns if not schema[c].is_numeric()]
    if not bad:
        return
    c = bad[0]
    vals = (lf.select(pl.col(c)).filter(pl.col(c).is_not_null()
                                        & pl.col(c).cast(pl.Float64, strict=False).is_null())
            .head(3).collect().to_series().cast(pl.String).to_list())
    raise DataError(f"non-numeric {what}: column(s) {bad[:10]} have dtype {schema[c]}; e.g. {c} holds "
                    f"{vals}. Fix: store prices/volumes as numbers (empty cell for a missing price).")


def _parse_date(dtype: pl.DataType) -> pl.Expr:
    """Expression turning the raw ``Date`` column into pl.Date (unparseable -> null)."""
    col = pl.col(DATE)
    if dtype == pl.Date:
        return col
    if isinstance(dtype, pl.Datetime):
        return col.dt.date()
    if dtype == pl.String:
        return col.str.strip_chars().str.to_date(strict=False)
    if dtype.is_integer():  # 20240131
        return col.cast(pl.String).str.to_date("%Y%m%d", strict=False)
    raise DataError(f"column '{DATE}' has dtype {dtype}, not a date. Fix: write dates as "
                    "'YYYY-MM-DD' strings, a date type or yyyymmdd integers.")


def read_prices(path: str | os.PathLike[str], *, sector_col: str = "sector",
                market_col: str = "market") -> tuple[pl.LazyFrame, int]:
    """Read, normalize and validate a long or wide daily price file.

    Args:
        path: CSV or parquet file.
        sector_col: optional column passed through unchanged (long input only).
        market_col: optional column passed through unchanged (long input only).

    Returns:
        (lazy frame ``Code`` String, ``Date`` Date, ``Close`` Float64 [+ Open, High, Low,
        Volume Float64, sector, market], rows with a missing close removed; number of such rows).

    Raises:
        DataError: missing file, no Code/Date/Close, unparseable dates, duplicate (Code, Date),
            non-numeric or non-positive prices, negative volume.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"price file not found: {p}. Fix: pass an existing CSV or parquet file to --prices.")
    lf = _scan(p)
    names = lf.collect_schema().names()
    lower: dict[str, str] = {}
    for n in names:
        if n.lower() in lower:
            raise DataError(f"columns '{lower[n.lower()]}' and '{n}' differ only in case. Fix: keep one of them.")
        lower[n.lower()] = n
    if DATE.lower() not in lower:
        raise DataError(f"price file {p} has no Date column (columns: {names[:12]}). Fix: name the "
                        "trading-date column 'Date' (long: Code, Date, Close; wide: Date + one column per code).")
    passthrough = [lower[c.lower()] for c in (sector_col, market_col) if c.lower() in lower]
    if CODE.lower() in lower:  # long
        if CLOSE.lower() not in lower:
            raise DataError(f"long price file {p} has no Close column (columns: {names[:12]}). Fix: name "
                            "the closing price column 'Close'.")
        opt = [o for o in OPTIONAL if o.lower() in lower]
        ren = {lower[c.lower()]: c for c in (CODE, DATE, CLOSE, *opt)}
        lf = lf.rename(ren).select(CODE, DATE, CLOSE, *opt, *passthrough)
        _numeric_or_raise(lf, [CLOSE, *opt], "prices")
        lf = lf.with_columns(pl.col(CODE).cast(pl.String), *(pl.col(c).cast(pl.Float64) for c in (CLOSE, *opt)))
    else:  # wide
        if CLOSE.lower() in lower:
            raise DataError(f"price file {p} has Close but no Code column. Fix: add 'Code' for a long file, "
                            "or for a wide file use one close-price column per code (no 'Close').")
        codes = [n for n in names if n != lower[DATE.lower()]]
        if not codes:
            raise DataError(f"wide price file {p} has no code columns. Fix: one close-price column per code.")
        lf = lf.rename({lower[DATE.lower()]: DATE})
        _numeric_or_raise(lf, codes, "prices")
        lf = (lf.with_columns(pl.col(codes).cast(pl.Float64))
              .unpivot(index=DATE, on=codes, variable_name=CODE, value_name=CLOSE)
              .select(CODE, DATE, CLOSE))
        opt = []
        passthrough = []
    lf = lf.with_columns(pl.col(DATE).cast(pl.String).alias("_raw_date"),
                         _parse_date(lf.collect_schema()[DATE]).alias(DATE))
    missing_close = pl.col(CLOSE).is_null() | pl.col(CLOSE).is_nan()
    bad_date = pl.col(DATE).is_null()
    dup = pl.struct(CODE, DATE).is_duplicated()
    nonpos = pl.any_horizontal(*(pl.col(c) <= 0 for c in (CLOSE, *[o for o in opt if o != "Volume"])))
    if "Volume" in opt:
        nonpos = nonpos | (pl.col("Volume") < 0)
    lf = lf.with_columns(_missing=missing_close)
    kept = lf.filter(~pl.col("_missing"))
    agg = kept.select(pl.len().alias("rows"), bad_date.sum().alias("bad_date"), dup.sum().alias("dup"),
                      nonpos.fill_null(False).sum().alias("nonpos")).collect().row(0, named=True)
    n_missing = int(lf.select(pl.col("_missing").sum()).collect().item())
    if agg["rows"] == 0:
        raise DataError(f"price file {p} has no rows with a close price. Fix: check the file is the price panel.")
    if agg["bad_date"]:
        ex = kept.filter(bad_date).select("_raw_date").head(3).collect().to_series().to_list()
        raise DataError(f"{agg['bad_date']} unparseable date(s) in {p}, e.g. {ex}. Fix: write every date "
                        "as YYYY-MM-DD (one format for the whole column).")
    if agg["dup"]:
        ex = kept.filter(dup).select(CODE, DATE).unique().sort(CODE, DATE).head(3).collect().rows()
        raise DataError(f"{agg['dup']} rows with a duplicate (Code, Date) in {p}, e.g. {ex}. Fix: keep one "
                        "price per stock and date (drop repeated rows or aggregate them).")
    if agg["nonpos"]:
        ex = kept.filter(nonpos).select(CODE, DATE, CLOSE).head(3).collect().rows()
        raise DataError(f"{agg['nonpos']} row(s) with a non-positive price (or negative volume) in {p}, "
                        f"e.g. {ex}. Fix: prices must be > 0: remove those rows or repair the prices "
                        "(missing prices can be left empty).")
    return kept.drop("_raw_date", "_missing"), n_missing


# ----------------------------------------------------------------------------- features


def backward_exprs(columns: list[str]) -> list[pl.Expr]:
    """Per-stock backward-looking features; evaluate on a frame sorted by (Code, Date).

    Args:
        columns: the normalized price columns (decides the volume / open / high-low features).

    Returns:
        expressions aliased ``bk_*``, each a window ``.over("Code")`` over rows <= t only.
    """
    c = pl.col(CLOSE)
    lr1 = (c / c.shift(1)).log()
    ex = [(c / c.shift(n) - 1).over(CODE).alias(f"bk_chg_{n}") for n in RETURN_WINDOWS]
    ex += [(c / c.shift(n)).log().over(CODE).alias(f"bk_logchg_{n}") for n in LOG_RETURN_WINDOWS]
    ex += [lr1.rolling_std(n).over(CODE).alias(f"bk_rvol_{n}") for n in VOL_WINDOWS]
    ex += [(c / c.rolling_mean(n) - 1).over(CODE).alias(f"bk_magap_{n}") for n in MA_WINDOWS]
    if "Volume" in columns:
        v = pl.col("Volume")
        mean_v = v.rolling_mean(VOLUME_WINDOW)
        ex.append(v.log1p().alias("bk_lvolume"))
        ex.append(pl.when(mean_v > 0).then(v / mean_v).over(CODE).alias(f"bk_vratio_{VOLUME_WINDOW}"))
    if "Open" in columns:
        ex.append((pl.col("Open") / c.shift(1) - 1).over(CODE).alias("bk_gap"))
    if "High" in columns and "Low" in columns:
        ex.append((pl.col("High") / pl.col("Low") - 1).alias("bk_hlrange"))
    return ex


def cross_section_exprs(columns: list[str]) -> list[pl.Expr]:
    """Per-date percentile rank in [0, 1] and z-score of the ``CS_BASE`` features present.

    Null where fewer than 2 stocks have the feature that day (rank) or the spread is 0 (z).
    """
    ex: list[pl.Expr] = []
    for f in (b for b in CS_BASE if b in columns):
        x = pl.col(f)
        n = x.count()
        ex.append(pl.when(n >= 2).then((x.rank("average") - 1) / (n - 1)).over(DATE).alias(f"{f}_csrank"))
        sd = x.std()
        ex.append(pl.when(sd > 0).then((x - x.mean()) / sd).over(DATE).alias(f"{f}_csz"))
    return ex


def target_exprs(horizons: Horizons) -> list[pl.Expr]:
    """``Close(t+h) / Close(t) - 1`` per stock (null in the last h rows of each stock)."""
    c = pl.col(CLOSE)
    return [(c.shift(-h) / c - 1).over(CODE).alias(t) for h, t in zip(horizons.horizons, horizons.targets, strict=True)]


def build_features(prices: pl.LazyFrame, horizons: Horizons, *, start: dt.date | None = None,
                   drop_warmup: bool = True) -> pl.LazyFrame:
    """Features and targets from a normalized long price frame (see ``read_prices``).

    Args:
        prices: ``Code, Date, Close`` (+ optional columns), already cut at ``--end``.
        horizons: target horizons and template.
        start: first date written (earlier prices are feature history only).
        drop_warmup: drop the first ``LOOKBACK`` rows of each stock.

    Returns:
        lazy frame ``Code, Date, [sector, market], bk_* (Float32), targets (Float32)``.
    """
    cols = prices.collect_schema().names()
    passthrough = [c for c in cols if c not in (CODE, DATE, CLOSE, *OPTIONAL)]
    back = backward_exprs(cols)
    lf = (prices.sort(CODE, DATE)
          .with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).over(CODE).alias("_row"),
                        *back, *target_exprs(horizons)))
    if drop_warmup:
        lf = lf.filter(pl.col("_row") >= LOOKBACK)
    if start is not None:
        lf = lf.filter(pl.col(DATE) >= start)
    back_names = lf.collect_schema().names()
    back_names = [n for n in back_names if n.startswith("bk_")]
    cs = cross_section_exprs(back_names)
    lf = lf.with_columns(cs)
    feats = [n for n in lf.collect_schema().names() if n.startswith("bk_")]
    clash = [f for f in feats if looks_like_target(f) or f in horizons.targets]
    if clash:  # a feature name must never be mistaken for a forward return
        raise DataError(f"feature names {clash} look like targets under template '{horizons.template}'. "
                        "Fix: choose a data.target_template that does not start with 'bk_'.")
    return lf.select(CODE, DATE, *passthrough, pl.col(feats).cast(pl.Float32),
                     pl.col(horizons.targets).cast(pl.Float32))


# ----------------------------------------------------------------------------- build


def _parse_day(s: str | None, flag: str) -> dt.date | None:
    if s is None:
        return None
    try:
        return dt.date.fromisoformat(s.strip())
    except ValueError:
        raise DataError(f"{flag} '{s}' is not a date. Fix: write it as YYYY-MM-DD.") from None


def build_dataset(prices: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  start: str | None = None, end: str | None = None, cfg: Config | None = None,
                  drop_warmup: bool = True) -> BuildSummary:
    """Read ``prices``, build features and targets, write ``out`` atomically (parquet).

    Raises:
        DataError: any input problem (see ``read_prices``), a bad or empty date range, or
            nothing left after the warm-up rows.
    """
    cfg = cfg or Config()
    horizons = Horizons.from_config(cfg)
    d0, d1 = _parse_day(start, "--start"), _parse_day(end, "--end")
    if d0 and d1 and d0 > d1:
        raise DataError(f"--start {d0} is after --end {d1}. Fix: swap them.")
    lf, n_missing = read_prices(prices, sector_col=cfg.data.sector_col, market_col=cfg.data.market_col)
    span = lf.select(pl.col(DATE).min().alias("lo"), pl.col(DATE).max().alias("hi"),
                     pl.col(DATE).filter((pl.col(DATE) >= (d0 or dt.date.min)) & (pl.col(DATE) <= (d1 or dt.date.max)))
                     .len().alias("n")).collect().row(0, named=True)
    if span["n"] == 0:
        raise DataError(f"no prices between --start {d0 or '-'} and --end {d1 or '-'}; the file covers "
                        f"{span['lo']} .. {span['hi']}. Fix: pick a range inside the data.")
    if d1 is not None:
        lf = lf.filter(pl.col(DATE) <= d1)
    built = build_features(lf, horizons, start=d0, drop_warmup=drop_warmup)
    with atomic_path(out) as tmp:
        built.sink_parquet(tmp)
        stats = pl.scan_parquet(tmp).select(
            pl.len().alias("rows"), pl.col(CODE).n_unique().alias("stocks"),
            pl.col(DATE).n_unique().alias("dates"), pl.col(DATE).min().alias("lo"),
            pl.col(DATE).max().alias("hi")).collect().row(0, named=True)
        if stats["rows"] == 0:
            raise DataError(f"no rows left after dropping the first {LOOKBACK} rows of each stock "
                            f"(warm-up of the {LOOKBACK}-day features). Fix: give more history (an "
                            "earlier --start or a longer price file).")
    names = built.collect_schema().names()
    feats = [n for n in names if n.startswith("bk_")]
    return BuildSummary(rows=stats["rows"], stocks=stats["stocks"], dates=stats["dates"], features=feats,
                        targets=list(horizons.targets), first_date=stats["lo"], last_date=stats["hi"],
                        dropped_missing_close=n_missing,
                        passthrough=[n for n in names if n not in (CODE, DATE, *feats, *horizons.targets)])
