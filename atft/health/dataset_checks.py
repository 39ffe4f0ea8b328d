"""Dataset health checks (``atft check-data``): small functions of the per-date statistics.

Every check reads a ``DatasetStats`` (``atft.data.stats``: one pass over the data, per-date
counts, min / max, +-inf, target counts outside the legitimate tail, the leakage medians, the
1-day bound) and returns ``CheckResult`` rows; its body is a polars expression over
``DatasetStats.per_date`` or a comparison of a measured figure. A check also takes the data
itself (a path, LazyFrame or DataFrame) and then measures only the part it needs.
``run_checks_by_name`` builds the statistics once and runs the registry ``CHECKS``.

Definitions (design.md section 7; the measured ones in ``atft.data.stats``):

* missing = ``is_null() | is_nan()``; target ratios leave out the legitimate tail (the last h
  rows of each stock), numerator and denominator.
* constant: spread ``max - min <= CONST_ATOL + CONST_RTOL * max(|max|, |min|)`` over the
  non-missing values (all-missing counts as constant); cross-sectionally constant on a date
  when at least 2 stocks have a value and their spread is that small.
* leakage: the median over dates of |per-date Pearson(feature, target)|; above
  ``health.leak_corr`` the feature is a near-copy of the target.
* 1-day return bound: share of non-missing 1-day targets with ``|r| > health.max_abs_return_1d``;
  it must be exactly 0 (a 100 %+ daily move is an unadjusted split or a unit error, not data).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from atft.config import Config
from atft.data.batches import open_source
from atft.data.schema import (  # noqa: F401 (feature_columns / legit_tail: part of this module's API)
    feature_columns,
    legit_tail,
    selection_problems,
    target_columns,
    target_dtype_problems,
)
from atft.data.splits import min_panel_dates
from atft.data.stats import DatasetStats, build_stats
from atft.health.result import CheckResult
from atft.horizons import Horizons, looks_like_target

Data = DatasetStats | pl.LazyFrame | pl.DataFrame | str | Path
CheckFn = Callable[[Data, Config], list[CheckResult]]
CONST_ATOL = 1e-12  # absolute spread below which values count as equal
CONST_RTOL = 1e-7  # relative spread (float32 resolution) below which values count as equal
N_EXAMPLES = 5  # failing cases listed per result


# ----------------------------------------------------------------------------- shared pieces


def stats_of(data: Data, cfg: Config, part: str) -> DatasetStats:
    """``data``'s statistics: the object itself, or (a check run alone) a pass measuring ``part``.

    Raises:
        ValueError: ``data`` is a ``DatasetStats`` built without ``part``.
    """
    if isinstance(data, DatasetStats):
        if part not in data.parts:
            raise ValueError(f"these DatasetStats were built without '{part}' (parts {sorted(data.parts)}); "
                             "build them with build_stats(data, cfg) for every check")
        return data
    return build_stats(data, cfg, {part})


def _schema(data: Data, cfg: Config) -> pl.Schema:
    return data.schema if isinstance(data, DatasetStats) else as_lazy(data, cfg).collect_schema()


def _fmt(x: float) -> str:
    """A figure as it appears in messages and examples."""
    return f"{x:.4g}"


def _ratio_results(kind: str, ratios: dict[str, float], limit: float, cause: str) -> list[CheckResult]:
    """One ``kind[column]`` result per column: its null/NaN share <= ``limit``."""
    return [CheckResult.compare(f"{kind}[{c}]", r, limit, "<=",
                                f"{c}: {_fmt(r)} of the rows are null/NaN ({cause}). Fix: repair the "
                                "column upstream or drop it (atft filter-data).") for c, r in ratios.items()]


def _zero_spread(hi: pl.Expr, lo: pl.Expr) -> pl.Expr:
    """``hi - lo`` within float32 resolution of the values (see CONST_ATOL / CONST_RTOL). An
    infinite extreme is never a zero spread: +-inf is ``infinite_values``' finding, and a column
    holding one next to finite values is not constant."""
    spread = (hi - lo).cast(pl.Float64)
    return spread.is_finite() & (spread <= CONST_ATOL + CONST_RTOL * pl.max_horizontal(hi.abs(), lo.abs()))


def date_stats(data: Data, cfg: Config) -> pl.DataFrame:
    """Per date (date order, a null date first) what the row-wise checks read:
    ``DatasetStats.row_stats`` (columns ``Date``, ``len``, ``m:f`` / ``k:f`` / ``lo:f`` / ``hi:f``
    per feature, ``i:c`` per float column, ``stocks``).

    Shapes:
        -> ``[G, 3 + 4 F + C]`` frame: G dates, F features, C float columns.
    """
    return stats_of(data, cfg, "rows").row_stats()


# ----------------------------------------------------------------------------- the checks


def check_feature_columns(data: Data, cfg: Config) -> list[CheckResult]:
    """The feature selection is valid: figure = number of problems (see ``feature_columns``)."""
    feats, problems = selection_problems(_schema(data, cfg), cfg)
    return [CheckResult.compare("feature_columns", len(problems), 0, "<=", " ".join(problems),
                                [f"{len(feats)} features"])]


def check_target_columns(data: Data, cfg: Config) -> list[CheckResult]:
    """Every configured target column exists (else name the missing ones and the look-alikes)."""
    schema = _schema(data, cfg)
    hz = Horizons.from_config(cfg)
    absent = [t for t in hz.targets if t not in schema]
    alike = sorted(c for c in schema.names() if looks_like_target(c) and c not in hz.targets)
    guess = Counter(re.sub(r"\d+", "{h}", c, count=1) for c in alike).most_common(1)
    hint = f" (the data looks like data.target_template='{guess[0][0]}')" if guess else ""
    msg = (f"target columns {absent} missing (template '{hz.template}', horizons {list(hz.horizons)}); "
           f"columns that look like targets: {alike or 'none'}{hint}. Fix: set data.target_template / "
           "data.horizons to the data's naming, or rebuild the dataset with these targets.")
    dtype = target_dtype_problems(schema, cfg)
    if dtype and not absent:
        msg = " ".join(dtype)
    return [CheckResult.compare("target_columns", len(absent) + len(dtype), 0, "<=", msg, absent)]


def check_dataset_size(data: Data, cfg: Config) -> list[CheckResult]:
    """The dataset has rows and at least the dates ``atft train`` needs for this config
    (``splits.min_panel_dates``: the warm-up, val / test and embargo dates, and 2 x the longest
    horizon + 20 so that every target exists outside its tail)."""
    s = stats_of(data, cfg, "rows")
    hz = Horizons.from_config(cfg)
    rows, dates, need = int(s.per_date["len"].sum()) if s.per_date.height else 0, s.per_date.height, min_panel_dates(cfg)
    if rows == 0:
        msg = "the dataset is empty (0 rows). Fix: point at the real dataset, or rebuild it (atft build-dataset)."
    else:
        d = cfg.data
        msg = (f"the dataset is too short: {dates} dates; this config needs at least {need} (a warm-up of "
               f"max(data.sequence_length - 1, graph.min_obs) dates, val / test fractions {d.val_fraction} / "
               f"{d.test_fraction}, an embargo before each, and 2 x the longest horizon ({hz.max} days) + 20). "
               "Fix: use a longer panel, smaller val/test fractions, a shorter sequence_length or graph.min_obs, "
               "or drop the long horizons (data.horizons).")
    return [CheckResult.compare("dataset_size", float(dates if rows else 0), float(need), ">=", msg,
                                [f"rows={rows}", f"dates={dates}"])]


def check_target_nan_ratio(data: Data, cfg: Config) -> list[CheckResult]:
    """Per target: null/NaN share outside the legitimate tail <= health.max_nan_ratio."""
    s = stats_of(data, cfg, "targets")
    row = s.per_date.select([(pl.col(f"tm:{t}").sum() / pl.col(f"te:{t}").sum()).alias(t)
                             for t in s.targets]).row(0, named=True) if s.targets else {}
    ratios = {t: (float(v) if v is not None and math.isfinite(v) else math.nan) for t, v in row.items()}
    return _ratio_results("target_nan_ratio", ratios, cfg.health.max_nan_ratio,
                          "outside the legitimate last-h-rows tail")


def check_target_date_nan_ratio(data: Data, cfg: Config) -> list[CheckResult]:
    """Per target: the worst date's null/NaN share (tail excluded) <= health.max_date_nan_ratio."""
    s = stats_of(data, cfg, "targets")
    out, limit, date = [], cfg.health.max_date_nan_ratio, s.date_col
    for t in s.targets:
        r = (s.per_date.select(date, pl.when(pl.col(f"te:{t}") > 0).then(pl.col(f"tm:{t}") / pl.col(f"te:{t}"))
                               .alias("r"))
             .filter(pl.col("r").is_not_null()).sort("r", descending=True))
        worst = float(r["r"][0]) if r.height else math.nan
        bad = r.filter(pl.col("r") > limit)
        ex = [f"{row[0]}: {_fmt(row[1])}" for row in bad.head(N_EXAMPLES).rows()]
        out.append(CheckResult.compare(
            f"target_date_nan_ratio[{t}]", worst, limit, "<=",
            f"{t} is mostly missing on {bad.height} date(s) (a whole missing day hides in the global "
            "ratio). Fix: repair those dates upstream or drop them (atft filter-data).", ex))
    return out


def check_feature_nan_ratio(data: Data, cfg: Config) -> list[CheckResult]:
    """Per feature: null/NaN share over all rows <= health.max_nan_ratio."""
    s = stats_of(data, cfg, "rows")
    feats, rows = feature_columns(s.schema, cfg), int(s.per_date["len"].sum())
    ratios = {f: (int(s.per_date[f"m:{f}"].sum()) / rows if rows else math.nan) for f in feats}
    return _ratio_results("feature_nan_ratio", ratios, cfg.health.max_nan_ratio, "over all rows")


def check_feature_date_nan_ratio(data: Data, cfg: Config) -> list[CheckResult]:
    """Worst (feature, date) null/NaN share <= health.max_date_nan_ratio."""
    s = stats_of(data, cfg, "rows")
    feats, date = feature_columns(s.schema, cfg), s.date_col
    per_date = (s.per_date.select(date, *[(pl.col(f"m:{f}") / pl.col("len")).alias(f) for f in feats])
                .unpivot(index=date, variable_name="feature", value_name="r")
                .sort("r", date, "feature", descending=[True, False, False]))
    limit = cfg.health.max_date_nan_ratio
    bad = per_date.filter(pl.col("r") > limit)
    ex = [f"{f}@{d}: {_fmt(r)}" for d, f, r in bad.head(N_EXAMPLES).rows()]
    worst = float(per_date["r"][0]) if per_date.height else math.nan
    return [CheckResult.compare("feature_date_nan_ratio", worst, limit, "<=",
                                f"{bad.height} (feature, date) cells are mostly missing "
                                f"(features {bad['feature'].unique().sort().to_list()[:N_EXAMPLES]}). "
                                "Fix: repair those dates upstream or drop them (atft filter-data).", ex)]


def check_infinite(data: Data, cfg: Config) -> list[CheckResult]:
    """No +-inf in any float column."""
    s = stats_of(data, cfg, "rows")
    counts = {c: int(s.per_date[f"i:{c}"].sum()) for c in s.floats}
    bad = {c: n for c, n in counts.items() if n}
    return [CheckResult.compare("infinite_values", sum(bad.values()), 0, "<=",
                                f"+-inf in columns {sorted(bad)} (a division by zero upstream, e.g. a "
                                "return on a zero price). Fix: replace them with null at the source.",
                                [f"{c}: {n}" for c, n in sorted(bad.items())])]


def check_duplicates(data: Data, cfg: Config) -> list[CheckResult]:
    """No duplicate (Code, Date): figure = rows minus distinct keys (per date: rows - distinct codes)."""
    s = stats_of(data, cfg, "rows")
    extra = int(s.per_date["len"].sum() - s.per_date["stocks"].sum())
    return [CheckResult.compare("duplicate_rows", extra, 0, "<=",
                                f"{extra} extra rows share a (Code, Date) with another row. Fix: keep one "
                                "row per stock and date (deduplicate upstream).", list(s.duplicate_examples))]


def check_min_stocks(data: Data, cfg: Config) -> list[CheckResult]:
    """Every date has at least data.min_stocks stocks (distinct codes)."""
    s, k = stats_of(data, cfg, "rows"), cfg.data.min_stocks
    per = s.per_date.select(s.date_col, pl.col("stocks").alias("n")).sort("n", s.date_col)
    bad = per.filter(pl.col("n") < k)
    return [CheckResult.compare("min_stocks_per_date", float(per["n"].min()) if per.height else math.nan,
                                k, ">=", f"{bad.height} date(s) have fewer than data.min_stocks={k} stocks. "
                                "Fix: drop those dates (start the panel later) or lower data.min_stocks.",
                                [f"{d}: {n}" for d, n in bad.head(N_EXAMPLES).rows()])]


def check_constant_features(data: Data, cfg: Config) -> list[CheckResult]:
    """No model-input column is constant over the whole frame (or entirely missing)."""
    s = stats_of(data, cfg, "rows")
    feats = feature_columns(s.schema, cfg)
    row = s.per_date.select([_zero_spread(pl.col(f"hi:{f}").max(), pl.col(f"lo:{f}").min()).fill_null(True).alias(f)
                             for f in feats]).row(0, named=True)
    const = [f for f in feats if row[f]]
    return [CheckResult.compare("constant_feature", len(const), 0, "<=",
                                f"features {const[:N_EXAMPLES]} are constant on every row: the model "
                                "cannot learn from them. Fix: repair the feature pipeline or add them to "
                                "data.exclude.", const)]


def check_cs_constant_features(data: Data, cfg: Config) -> list[CheckResult]:
    """Share of dates on which a feature is cross-sectionally constant <= max_constant_date_share."""
    s = stats_of(data, cfg, "rows")
    feats = feature_columns(s.schema, cfg)
    two = {f: pl.col(f"k:{f}") >= 2 for f in feats}  # dates with a cross-section to compare
    row = (s.per_date.select([((_zero_spread(pl.col(f"hi:{f}"), pl.col(f"lo:{f}")) & two[f]).sum() / two[f].sum())
                              .alias(f) for f in feats]).row(0, named=True))
    # a feature that never has 2 values on one date shows no cross-section at all: share 1
    share = {f: (float(row[f]) if row[f] is not None and row[f] == row[f] else 1.0) for f in feats}
    limit = cfg.health.max_constant_date_share
    bad = sorted((f for f in feats if share[f] > limit), key=lambda f: -share[f])
    worst = max(share.values(), default=math.nan)
    return [CheckResult.compare("cs_constant_feature", worst, limit, "<=",
                                f"features {bad[:N_EXAMPLES]} are identical across stocks on most dates "
                                "(e.g. a z-score computed on single-stock slices, all 0). Fix: compute "
                                "cross-sectional transforms per date over all stocks, or exclude "
                                "market-wide features (data.exclude).",
                                [f"{f}: {_fmt(share[f])}" for f in bad[:N_EXAMPLES]])]


def check_leakage(data: Data, cfg: Config) -> list[CheckResult]:
    """Per target: max over features of median-over-dates |Pearson(feature, target)| <= leak_corr."""
    schema = _schema(data, cfg)
    feats, targets = feature_columns(schema, cfg), target_columns(schema, cfg)
    if not targets:
        return []
    leak = stats_of(data, cfg, "leak").leak
    meds = leak if leak is not None else np.full((len(feats), len(targets)), np.nan)  # [F, T]
    out, limit = [], cfg.health.leak_corr
    for j, t in enumerate(targets):
        med = {f: float(v) for f, v in zip(feats, meds[:, j].tolist(), strict=True) if v == v}
        bad = sorted((f for f in med if med[f] > limit), key=lambda f: -med[f])
        worst = max(med.values(), default=math.nan)
        out.append(CheckResult.compare(
            f"leakage[{t}]", worst, limit, "<=",
            f"features {bad[:N_EXAMPLES]} are near-copies of target {t} (median per-date |corr| up to "
            f"{_fmt(worst)}): a forward return leaked into the inputs. Fix: remove them from the features "
            "(data.exclude) and check how they were built.", [f"{f}~{t}: {_fmt(med[f])}" for f in bad]))
    return out


def check_return_bound(data: Data, cfg: Config) -> list[CheckResult]:
    """Share of 1-day targets with |r| > health.max_abs_return_1d must be 0 (no 1-day horizon: none)."""
    hz, schema = Horizons.from_config(cfg), _schema(data, cfg)
    if 1 not in hz.horizons or hz.targets[hz.index(1)] not in schema:
        return []
    s, bound = stats_of(data, cfg, "ret"), cfg.health.max_abs_return_1d
    assert s.ret_1d is not None
    t, n_bad, n_valid = s.ret_1d
    share = n_bad / n_valid if n_valid else math.nan
    return [CheckResult.compare(f"return_bound_1d[{t}]", share, 0.0, "<=",
                                f"{n_bad} one-day returns exceed |{bound}| (unadjusted split, price unit "
                                "change or a bad tick). Fix: use split-adjusted prices and remove bad ticks.",
                                list(s.ret_examples))]


CHECKS: dict[str, CheckFn] = {
    "dataset_size": check_dataset_size,
    "feature_columns": check_feature_columns,
    "target_columns": check_target_columns,
    "target_nan_ratio": check_target_nan_ratio,
    "target_date_nan_ratio": check_target_date_nan_ratio,
    "feature_nan_ratio": check_feature_nan_ratio,
    "feature_date_nan_ratio": check_feature_date_nan_ratio,
    "infinite_values": check_infinite,
    "duplicate_rows": check_duplicates,
    "min_stocks_per_date": check_min_stocks,
    "constant_feature": check_constant_features,
    "cs_constant_feature": check_cs_constant_features,
    "leakage": check_leakage,
    "return_bound_1d": check_return_bound,
}
# checks that need a valid feature selection (skipped when feature_columns fails)
STRUCTURE_CHECKS = ("feature_columns", "target_columns")  # read the schema only: run on any dataset
FEATURE_CHECKS = frozenset({"feature_nan_ratio", "feature_date_nan_ratio", "constant_feature",
                            "cs_constant_feature", "leakage"})


def as_lazy(data: pl.LazyFrame | pl.DataFrame | str | Path, cfg: Config) -> pl.LazyFrame:
    """A LazyFrame from a frame or a dataset path (``atft.data.source.scan``), ids checked.

    Raises:
        DataError: the frame lacks data.code_col / data.date_col (a path: see ``scan``).
    """
    return open_source(data, cfg.data.code_col, cfg.data.date_col).lf


def run_checks_by_name(data: Data, cfg: Config) -> dict[str, list[CheckResult]]:
    """Every check in ``CHECKS`` over one ``DatasetStats`` (built here unless given): check name
    -> its results, registry order. The checks in ``FEATURE_CHECKS`` are left out when the
    feature selection itself fails.
    """
    if not isinstance(data, DatasetStats):
        schema = _schema(data, cfg)
        structure = {name: CHECKS[name](data, cfg) for name in STRUCTURE_CHECKS}
        if target_dtype_problems(schema, cfg):  # text targets: nothing else can be measured
            return structure
        data = build_stats(data, cfg)
    stats = data
    size = check_dataset_size(stats, cfg)
    if not size[0].passed:  # empty or too short: one clear line, not a wall of NaN figures
        return {"dataset_size": size, **{n: CHECKS[n](stats, cfg) for n in STRUCTURE_CHECKS}}
    selection_ok = check_feature_columns(stats, cfg)[0].passed
    return {name: fn(stats, cfg) for name, fn in CHECKS.items() if selection_ok or name not in FEATURE_CHECKS}


def run_checks(data: Data, cfg: Config) -> list[CheckResult]:
    """Run every check in ``CHECKS`` (one pass); feature checks are skipped when the selection
    itself fails. The results of ``run_checks_by_name``, flat."""
    return [r for results in run_checks_by_name(data, cfg).values() for r in results]
