"""The dataset statistics by definition: plain polars group_bys, to hold ``atft.data.stats`` to.

Test-only helpers (``tests/test_data_checks.py``, ``tests/test_filter.py``).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import polars as pl

from atft.config import Config
from atft.data.schema import legit_tail, missing, selection_problems, target_columns
from atft.data.stats import MIN_CORR_PAIRS
from atft.horizons import Horizons


def polars_date_stats(df: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """``date_stats`` by definition: one polars group_by per date (the pre-streaming implementation)."""
    schema, d = df.schema, cfg.data
    feats = [f for f in selection_problems(schema, cfg)[0] if f in schema and schema[f].is_numeric()]
    agg = [pl.len().alias("len")]
    for f in feats:
        x = pl.col(f).fill_nan(None)
        agg += [missing(f, schema[f]).sum().alias(f"m:{f}"), x.count().alias(f"k:{f}"),
                x.min().alias(f"lo:{f}"), x.max().alias(f"hi:{f}")]
    agg += [pl.col(c).is_infinite().sum().alias(f"i:{c}") for c, t in schema.items() if t.is_float()]
    agg.append(pl.col(d.code_col).n_unique().alias("stocks"))
    return df.group_by(d.date_col).agg(agg).sort(d.date_col)


def polars_tail_counts(df: pl.DataFrame, cfg: Config, by: str | None = None,
                       skip_dates: Collection[object] = ()) -> pl.DataFrame:
    """Per date (or per ``by``): ``tm:t`` / ``te:t``, target missing / eligible rows outside the
    legitimate tail (``legit_tail``, ranked over all rows), rows of ``skip_dates`` left out."""
    d, hz = cfg.data, Horizons.from_config(cfg)
    targets = target_columns(df.schema, cfg)
    tails = [legit_tail(hz.horizons[hz.targets.index(t)], d.code_col, d.date_col).alias(f"_tail:{t}")
             for t in targets]
    agg = [e for t in targets for e in ((missing(t, df.schema[t]) & ~pl.col(f"_tail:{t}")).sum().alias(f"tm:{t}"),
                                        (~pl.col(f"_tail:{t}")).sum().alias(f"te:{t}"))]
    rows = df.with_columns(tails).filter(~pl.col(d.date_col).is_in(list(skip_dates)).fill_null(False))
    key = by or d.date_col
    return rows.group_by(key).agg(agg).sort(key)


def polars_stock_counts(df: pl.DataFrame, cfg: Config, skip_dates: Collection[object] = ()) -> pl.DataFrame:
    """Per code over the rows whose date is not skipped: ``len``, ``m:f`` per feature and the
    target counts of ``polars_tail_counts``."""
    d = cfg.data
    feats = [f for f in selection_problems(df.schema, cfg)[0] if f in df.schema]
    kept = df.filter(~pl.col(d.date_col).is_in(list(skip_dates)).fill_null(False))
    base = kept.group_by(d.code_col).agg(pl.len(), *[missing(f, df.schema[f]).sum().alias(f"m:{f}") for f in feats])
    return base.join(polars_tail_counts(df, cfg, d.code_col, skip_dates), on=d.code_col, how="left",
                     nulls_equal=True).sort(d.code_col)


def polars_leak_medians(df: pl.DataFrame, feats: list[str], targets: list[str], date: str = "Date") -> np.ndarray:
    """Median over dates of |pl.corr| of the float32 values (pairwise complete, >= MIN_CORR_PAIRS).

    Each column is first shifted by its date minimum (exact in float64): ``pl.corr`` in a lazy
    group_by loses ~1e-10 on a column whose |mean| / std is 1e7 (``f_far``).
    """
    def value(c: str) -> pl.Expr:
        v = pl.col(c).cast(pl.Float32).cast(pl.Float64).fill_nan(None)
        return v - v.min().over(date)

    def corr(f: str, t: str) -> pl.Expr:
        x, y = value(f), value(t)
        n = (x.is_not_null() & y.is_not_null()).sum()
        return pl.when(n >= MIN_CORR_PAIRS).then(pl.corr(x, y).fill_nan(None)).alias(f"{f}|{t}")

    row = (df.lazy().group_by(date).agg([corr(f, t) for f in feats for t in targets])
           .select([pl.col(f"{f}|{t}").abs().median() for f in feats for t in targets]).collect().row(0))
    return np.array(row, dtype=float).reshape(len(feats), len(targets))
