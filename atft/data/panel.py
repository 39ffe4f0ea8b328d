"""The Panel: a dense [dates x stocks] view of a long (Code, Date) table (design.md section 2).

``load_panel`` reads only the needed columns of a parquet dataset (lazily, through
``atft.data.source.scan``) and scatters them into dense float32 arrays: Code and Date are mapped
to integer indices with polars, and the values land by numpy fancy assignment, a few columns at a
time, so the peak memory is the dense arrays plus one column chunk (no per-stock loops).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from atft.config import Config
from atft.data.schema import feature_columns, infinite_message, target_dtype_problems
from atft.data.source import scan
from atft.errors import DataError
from atft.horizons import Horizons, target_column

log = logging.getLogger(__name__)

CHUNK_COLUMNS = 16  # value columns collected (and scattered) per pass over the dataset


@dataclass
class Panel:
    """Dense panel arrays.

    Shapes:
        features: ``[D, N, F]`` float32, raw (NaN = missing).
        targets: ``[D, N, H]`` float32 in return units (NaN = missing), horizons in config order.
        valid: ``[D, N]`` bool, the (Code, Date) row exists.
        returns: ``[D, N]`` float32 backward 1-day return realized by date d (for the graph).
        sector: ``[N]`` int64 sector id (-1 unknown); market: ``[N]`` int64 (-1 unknown).
    """

    features: np.ndarray
    targets: np.ndarray
    valid: np.ndarray
    returns: np.ndarray
    codes: list[str]
    dates: list[dt.date]
    feature_names: list[str]
    target_names: list[str]
    horizons: list[int]
    sector: np.ndarray
    market: np.ndarray

    @property
    def num_dates(self) -> int:
        return len(self.dates)

    @property
    def num_stocks(self) -> int:
        return len(self.codes)

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


def load_panel(cfg: Config, path: str | None = None) -> Panel:
    """Load a long (Code, Date) parquet dataset into a dense ``Panel``.

    Args:
        cfg: the ``atft.config.Config`` (data.*, graph.return_column).
        path: dataset path; None = ``cfg.data.path`` (which must then be set: ``atft.prepare``
            resolves "" to the embedded synthetic panel before calling this).

    Returns:
        The Panel; dates and codes sorted ascending.

    Shapes:
        See ``Panel``: features ``[D, N, F]``, targets ``[D, N, H]``, valid/returns ``[D, N]``.

    Raises:
        DataError: missing target columns, a target among the features, duplicate (Code, Date),
            null Code/Date, no rows, or no way to derive the backward 1-day return.
    """
    d = cfg.data
    src = path if path is not None else str(d.path)
    if not src:
        raise DataError("no dataset path: data.path is '' (the embedded synthetic panel). Fix: pass a "
                        "path, or load through atft.prepare, which generates the embedded default.")
    lf = scan(src, d.code_col, d.date_col)
    schema = lf.collect_schema()
    names = list(schema.names())
    horizons = Horizons.from_config(cfg)
    horizons.check_targets(names)
    features = feature_columns(schema, cfg)  # rejects target / forward-return columns (leakage)
    dtype_problems = target_dtype_problems(schema, cfg)
    if dtype_problems:
        raise DataError(" ".join(dtype_problems))
    if not features:
        raise DataError(f"no feature columns in {src}. Fix: add numeric feature columns or set data.features.")
    ret_col = _return_column(cfg, names, horizons)

    # 1. keys: Code/Date -> integer indices (polars dense rank == position in the sorted uniques)
    extra = [c for c in (d.sector_col, d.market_col) if c and c in schema]
    keys = lf.select([pl.col(d.code_col), pl.col(d.date_col), *[pl.col(c).cast(pl.String) for c in extra]]).collect()
    if keys.height == 0:
        raise DataError(f"dataset {src} has no rows. Fix: point data.path at a non-empty dataset.")
    nulls = keys.select(pl.col(d.code_col).is_null().sum(), pl.col(d.date_col).is_null().sum()).row(0)
    if nulls[0] or nulls[1]:
        raise DataError(f"{nulls[0]} rows with a null '{d.code_col}' and {nulls[1]} with a null or unparsable "
                        f"'{d.date_col}' in {src}. Fix: drop those rows or repair the id/date values.")
    codes = keys.get_column(d.code_col).unique().sort().to_list()
    dates = keys.get_column(d.date_col).unique().sort().to_list()
    idx = keys.select(
        (pl.col(d.code_col).rank("dense") - 1).cast(pl.Int64).alias("n"),
        (pl.col(d.date_col).rank("dense") - 1).cast(pl.Int64).alias("d"),
    )
    n_idx = idx.get_column("n").to_numpy()
    d_idx = idx.get_column("d").to_numpy()
    num_d, num_n = len(dates), len(codes)
    flat = d_idx * num_n + n_idx  # [rows] position in the [D, N] grid
    _check_duplicates(flat, codes, dates, num_n)
    valid = np.zeros(num_d * num_n, dtype=bool)
    valid[flat] = True
    sector = _stock_codes(keys, d.sector_col, extra, n_idx, num_n)
    market = _stock_codes(keys, d.market_col, extra, n_idx, num_n)
    del keys, idx, n_idx, d_idx

    # 2. values: a few columns per pass, scattered into the dense arrays
    feats = _dense(lf, features, flat, num_d, num_n)  # [D, N, F]
    targets = _dense(lf, horizons.targets, flat, num_d, num_n)  # [D, N, H]
    inf = {c: int(n) for c, n in zip([*features, *horizons.targets],
                                     [*np.isinf(feats).sum(axis=(0, 1)), *np.isinf(targets).sum(axis=(0, 1))],
                                     strict=True) if n}
    if inf:  # the model would train on them: the same rule as atft check-data's infinite_values
        raise DataError(infinite_message(inf))
    if cfg.graph.return_column:
        returns = _dense(lf, [ret_col], flat, num_d, num_n)[:, :, 0]  # [D, N] already backward
    elif ret_col in horizons.targets:
        returns = lag_one_date(targets[:, :, horizons.targets.index(ret_col)])  # [D, N]
    else:
        returns = lag_one_date(_dense(lf, [ret_col], flat, num_d, num_n)[:, :, 0])  # [D, N]
    log.info("panel %s: %d dates x %d stocks x %d features, %d rows", src, num_d, num_n, len(features), flat.size)
    return Panel(features=feats, targets=targets, valid=valid.reshape(num_d, num_n), returns=returns,
                 codes=[str(c) for c in codes], dates=list(dates), feature_names=features,
                 target_names=horizons.targets, horizons=list(horizons.horizons), sector=sector, market=market)


def lag_one_date(x: np.ndarray) -> np.ndarray:
    """``out[d] = x[d - 1]`` per stock (``out[0]`` NaN): the 1-day forward return at d-1 is the
    backward return realized by d.

    Shapes:
        x: ``[D, N]`` -> ``[D, N]``.
    """
    out = np.empty_like(x)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def _return_column(cfg: Config, names: list[str], horizons: Horizons) -> str:
    col = str(cfg.graph.return_column)
    if col:
        if horizons.target_horizons_in([col]):
            raise DataError(f"graph.return_column '{col}' is a forward-return target (a label): the graph "
                            "would see the future. Fix: give a backward 1-day return column, or '' to use "
                            "the 1-day target lagged by one date.")
        if col not in names:
            raise DataError(f"graph.return_column '{col}' is not in the data. Fix: set it to an existing "
                            "backward 1-day return column, or to '' to use the 1-day target lagged by one date.")
        return col
    one = target_column(1, horizons.template)
    if one not in names:
        raise DataError(f"the graph needs backward 1-day returns: graph.return_column is '' and the 1-day "
                        f"target '{one}' is not in the data (horizons found: {horizons.target_horizons_in(names)}). "
                        "Fix: add the 1-day target, set graph.return_column, or disable the graph (graph.enabled=false).")
    return one


def _check_duplicates(flat: np.ndarray, codes: list[object], dates: list[object], num_n: int) -> None:
    counts = np.bincount(flat)
    dup = np.flatnonzero(counts > 1)
    if dup.size:
        ex = [(str(codes[i % num_n]), str(dates[i // num_n])) for i in dup[:5].tolist()]
        raise DataError(f"{dup.size} duplicate (Code, Date) pairs, e.g. {ex}. Fix: keep one row per stock "
                        "and date (deduplicate the dataset).")


def _stock_codes(keys: pl.DataFrame, col: str, present: list[str], n_idx: np.ndarray, num_n: int) -> np.ndarray:
    """Per-stock integer ids of a categorical column (sorted categories; -1 unknown / absent)."""
    out = np.full(num_n, -1, dtype=np.int64)
    if col not in present:
        return out
    cat = (keys.get_column(col).rank("dense") - 1).cast(pl.Int64).fill_null(-1).to_numpy()
    has = cat >= 0
    out[n_idx[has]] = cat[has]  # a stock's last non-null value wins
    return out


def _dense(lf: pl.LazyFrame, cols: list[str], flat: np.ndarray, num_d: int, num_n: int) -> np.ndarray:
    """Scatter ``cols`` into a dense ``[D, N, len(cols)]`` float32 array (NaN where no row / null)."""
    out = np.full((num_d * num_n, len(cols)), np.nan, dtype=np.float32)
    for j0 in range(0, len(cols), CHUNK_COLUMNS):
        part = cols[j0:j0 + CHUNK_COLUMNS]
        block = lf.select([pl.col(c).cast(pl.Float32).fill_null(math.nan) for c in part]).collect()
        if block.height != flat.size:
            raise DataError(f"dataset changed while loading ({block.height} rows, expected {flat.size}). "
                            "Fix: do not rewrite the dataset during loading.")
        out[flat, j0:j0 + len(part)] = block.to_numpy()
        del block
    return out.reshape(num_d, num_n, len(cols))
