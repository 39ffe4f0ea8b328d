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
never dropped. Every ratio is read from the dataset statistics of ``atft check-data``
(``atft.data.stats.build_stats``: per-date counts for steps 1 and 2, per-stock counts over the
remaining dates for steps 3 and 4, the tail ranked over all rows): one pass over the data, a
second one for the per-stock counts only when dates were dropped. The output is streamed to a
temp file and renamed (atomic).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import polars as pl

from atft.config import Config
from atft.data.schema import feature_columns
from atft.data.source import scan
from atft.data.stats import ENGINE, build_stats
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


def _ratios(missing: dict[str, int], cells: int) -> dict[str, float]:
    """Per column: missing / cells (1.0 when there are no cells: nothing is known about it)."""
    return {c: (m / cells if cells else 1.0) for c, m in missing.items()}


def _over(ratios: dict[object, float], r: float) -> dict[object, float]:
    """The entries over ``r``, largest first (ties in the given order)."""
    return {k: v for k, v in sorted(ratios.items(), key=lambda kv: -kv[1]) if v > r}


def _refuse_to_empty(feats: list[str], drop: set[str], n_dates: int, bad_dates: dict[object, float],
                     r: float) -> None:
    """A filter that would remove every feature or every date refuses, naming the threshold that did it
    (targets and ids are never dropped)."""
    if feats and drop >= set(feats):
        raise DataError(f"--max-nan-ratio {r} would drop all {len(feats)} feature columns (every one has more than "
                        f"{r:.3g} null/NaN, e.g. {feats[0]}); nothing would be left to train on. Fix: raise "
                        "--max-nan-ratio above the features' NaN shares (atft check-data lists them).")
    if n_dates and len(bad_dates) >= n_dates:
        raise DataError(f"--max-nan-ratio {r} would drop all {n_dates} dates with targets (a target is more than "
                        f"{r:.3g} missing on every one). Fix: raise --max-nan-ratio, or repair the targets (atft check-data).")


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
    Horizons.from_config(cfg).check_targets(schema.names())
    feats = feature_columns(schema, cfg)
    stats = build_stats(input_path, cfg, ("rows", "targets"), per_stock=True)
    per_date, targets = stats.per_date, stats.targets
    rows_in = int(per_date["len"].sum())

    # 1. columns (the figures of check-data's feature_nan_ratio)
    bad_cols = _over(_ratios({f: int(per_date[f"m:{f}"].sum()) for f in feats}, rows_in), r)
    kept = [f for f in feats if f not in bad_cols]

    # 2. dates: worst target NaN ratio outside the legitimate tail
    worst = per_date.select(date, pl.max_horizontal(
        [pl.when(pl.col(f"te:{t}") > 0).then(pl.col(f"tm:{t}") / pl.col(f"te:{t}")) for t in targets]).alias("r"))
    bad = worst.filter(pl.col("r") > r).sort(date)
    bad_dates = dict(zip(bad[date].to_list(), bad["r"].to_list(), strict=True))

    # 3. stocks: pooled share of missing cells (kept features + non-tail targets), remaining dates
    per_stock = stats.per_stock
    assert per_stock is not None
    if bad_dates:  # the per-stock counts again, without the dropped dates (the tail still over all rows)
        per_stock = build_stats(input_path, cfg, (), per_stock=True, skip_dates=list(bad_dates)).per_stock
        assert per_stock is not None
    cells = pl.sum_horizontal([pl.col(f"m:{f}") for f in kept] + [pl.col(f"tm:{t}") for t in targets])
    elig = pl.col("len") * len(kept) + pl.sum_horizontal([pl.col(f"te:{t}") for t in targets])
    per_code = (per_stock.filter(pl.col("len") > 0).select(code, (cells / elig).alias("r"))
                .filter(pl.col("r") > r).sort(code))
    bad_codes = dict(zip(per_code[code].to_list(), per_code["r"].to_list(), strict=True))

    # 4. columns again, on the rows that remain
    remain = per_stock.filter(~pl.col(code).is_in(list(bad_codes)) & (pl.col("len") > 0))
    late = _over(_ratios({f: int(remain[f"m:{f}"].sum()) for f in kept}, int(remain["len"].sum())), r)
    rows = lf.filter(~pl.col(date).is_in(list(bad_dates))).filter(~pl.col(code).is_in(list(bad_codes)))
    drop = set(bad_cols) | set(late)
    if rows_in:  # an empty input is refused below, with its own message
        labelled = per_date.filter(pl.any_horizontal([pl.col(f"te:{t}") > 0 for t in targets]))[date].n_unique()
        _refuse_to_empty(feats, drop, labelled, bad_dates, r)
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
