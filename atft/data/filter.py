"""``atft filter-data``: drop feature columns, dates and stocks whose NaN share exceeds R.

Missing = null or float NaN (``atft.data.schema.missing``); target cells in the legitimate tail
(the last h rows of each stock, ``atft.data.schema.legit_tail``) are never counted. Order:

1. feature columns with an overall NaN ratio > R are dropped (first, so that one broken
   column does not condemn every date and stock);
2. dates on which any target's NaN ratio (tail excluded) > R are dropped (a missing day);
3. stocks whose NaN ratio > R on the remaining dates are dropped, the ratio pooled over all
   their cells: missing kept-feature cells + missing non-tail target cells, over those cells;
4. feature ratios are measured again on the kept rows and features now > R are dropped too,
   so every kept feature satisfies the bound on the written rows.

Target columns, Code, Date and every non-feature column (sector, market, ``data.exclude``) are
never dropped. Each step is one lazy aggregate; the output is streamed to a temp file and
renamed (atomic).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import polars as pl

from atft.config import Config
from atft.data.schema import feature_columns, legit_tail, missing
from atft.data.source import scan
from atft.data.stats import ENGINE
from atft.errors import DataError
from atft.horizons import Horizons
from atft.io import atomic_path


@dataclass
class FilterReport:
    """What ``filter_dataset`` dropped (ratios are the NaN shares that exceeded the bound)."""

    rows_in: int
    rows_out: int
    dropped_features: dict[str, float] = field(default_factory=dict)
    dropped_dates: dict[dt.date, float] = field(default_factory=dict)
    dropped_codes: dict[str, float] = field(default_factory=dict)
    dropped_features_after_rows: dict[str, float] = field(default_factory=dict)

    def lines(self, limit: int = 10) -> list[str]:
        """Human-readable summary: counts and (the first ``limit``) names."""
        def show(d: dict[object, float]) -> str:
            items = [f"{k} ({v:.3g})" for k, v in list(d.items())[:limit]]
            return ", ".join(items) + (f", ... (+{len(d) - limit})" if len(d) > limit else "")
        out = [f"rows: {self.rows_in} -> {self.rows_out}"]
        for what, d in (("feature columns", self.dropped_features), ("dates", self.dropped_dates),
                        ("stocks", self.dropped_codes),
                        ("feature columns (re-measured on kept rows)", self.dropped_features_after_rows)):
            out.append(f"dropped {len(d)} {what}" + (f": {show(d)}" if d else ""))  # type: ignore[arg-type]
        return out


def _feature_ratios(lf: pl.LazyFrame, feats: list[str], schema: pl.Schema) -> dict[str, float]:
    if not feats:
        return {}
    row = lf.select([missing(f, schema[f]).mean().alias(f) for f in feats]).collect(engine=ENGINE).row(0, named=True)
    return {f: float(row[f]) if row[f] is not None else 1.0 for f in feats}


def filter_dataset(input_path: str | os.PathLike[str], output: str | os.PathLike[str],
                   max_nan_ratio: float, cfg: Config | None = None) -> FilterReport:
    """Drop columns, dates and stocks over ``max_nan_ratio`` (order in the module doc); write ``output``.

    Raises:
        DataError: bad ratio, unreadable input, missing target columns, an invalid feature
            selection, or nothing left to write.
    """
    cfg = cfg or Config()
    if not 0.0 <= max_nan_ratio <= 1.0:
        raise DataError(f"--max-nan-ratio {max_nan_ratio} is not in [0, 1]. Fix: pass a share, e.g. 0.05.")
    code, date, r = cfg.data.code_col, cfg.data.date_col, max_nan_ratio
    lf = scan(input_path, code, date)
    schema = lf.collect_schema()
    hz = Horizons.from_config(cfg)
    hz.check_targets(schema.names())
    feats = feature_columns(schema, cfg)
    rows_in = int(lf.select(pl.len()).collect(engine=ENGINE).item())

    # 1. columns
    ratios = _feature_ratios(lf, feats, schema)
    bad_cols = {f: v for f, v in sorted(ratios.items(), key=lambda kv: -kv[1]) if v > r}
    kept = [f for f in feats if f not in bad_cols]

    # 2. dates: worst target NaN ratio outside the legitimate tail
    tails = [legit_tail(h, code, date).alias(f"_tail:{t}") for h, t in zip(hz.horizons, hz.targets, strict=True)]
    base = lf.with_columns(tails)
    miss_t = {t: missing(t, schema[t]) & ~pl.col(f"_tail:{t}") for t in hz.targets}
    elig_t = {t: ~pl.col(f"_tail:{t}") for t in hz.targets}
    per_date = (base.group_by(date)
                .agg([pl.when(elig_t[t].sum() > 0).then(miss_t[t].sum() / elig_t[t].sum()).alias(t)
                      for t in hz.targets])
                .select(date, pl.max_horizontal(hz.targets).alias("r"))
                .filter(pl.col("r") > r).sort(date).collect(engine=ENGINE))
    bad_dates = dict(zip(per_date[date].to_list(), per_date["r"].to_list(), strict=True))
    rows = base.filter(~pl.col(date).is_in(list(bad_dates)))

    # 3. stocks: pooled share of missing cells (kept features + non-tail targets)
    miss_cells = pl.sum_horizontal([missing(f, schema[f]) for f in kept] + list(miss_t.values()))
    elig_cells = pl.sum_horizontal([pl.lit(1)] * len(kept) + list(elig_t.values()))
    per_code = (rows.group_by(code).agg((miss_cells.sum() / elig_cells.sum()).alias("r"))
                .filter(pl.col("r") > r).sort(code).collect(engine=ENGINE))
    bad_codes = dict(zip(per_code[code].to_list(), per_code["r"].to_list(), strict=True))
    rows = rows.filter(~pl.col(code).is_in(list(bad_codes)))

    # 4. columns again, on the rows that remain
    again = _feature_ratios(rows, kept, schema)
    late = {f: v for f, v in sorted(again.items(), key=lambda kv: -kv[1]) if v > r}
    drop = set(bad_cols) | set(late)
    out_cols = [c for c in schema.names() if c not in drop]
    result = rows.select(out_cols)
    with atomic_path(output) as tmp:
        result.sink_parquet(tmp, engine=ENGINE)
        rows_out = int(pl.scan_parquet(tmp).select(pl.len()).collect().item())
        if rows_out == 0:
            raise DataError(f"no rows to write ({rows_in} rows in; {len(bad_dates)} dates and "
                            f"{len(bad_codes)} stocks over --max-nan-ratio {r}). Fix: pass a non-empty "
                            "dataset or raise --max-nan-ratio (atft check-data shows where the NaNs are).")
    return FilterReport(rows_in, rows_out, bad_cols, bad_dates, bad_codes, late)
