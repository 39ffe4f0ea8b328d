"""Dataset health checks (``atft check-data``): per-date aggregates of ONE streaming pass.

``run_checks`` reads the data once (``atft.health.scan``: polars decodes record batches, numpy
folds each into additive per-date sums: counts, null/NaN counts, min / max, +-inf counts, the
pairwise-complete moment sums of every (feature, target, date), distinct (date, code) pairs).
Every check reads those sums; nothing is materialized, so files larger than RAM are checked in
one batch of memory plus the per-date sums. A check called on its own runs a pass over just the
columns it needs. ``CHECKS`` is the registry; ``run_checks`` runs it, ``run_checks_by_name``
keeps its results per check.

Definitions (design.md section 7):

* missing = ``is_null() | is_nan()`` (polars ``null_count`` ignores float NaN).
* legitimate tail of target h: the last h rows of each stock (the last h dates of the panel,
  and the h rows before a stock's last date when it delists). These rows have no h-day target
  and are excluded from target NaN ratios (numerator and denominator).
* constant: spread ``max - min <= CONST_ATOL + CONST_RTOL * max(|max|, |min|)`` over the
  non-missing values (all-missing counts as constant); cross-sectionally constant on a date
  when at least 2 stocks have a value and their spread is that small.
* leakage: per date, Pearson(feature, target) over the rows where both exist (dates with fewer
  than ``MIN_CORR_PAIRS`` pairs skipped; a date with +-inf in either column has none); the figure
  is the median over dates of the absolute value; above ``health.leak_corr`` the feature is a
  near-copy of the target.
* 1-day return bound: share of non-missing 1-day targets with ``|r| > health.max_abs_return_1d``;
  it must be exactly 0 (a 100 %+ daily move is an unadjusted split or a unit error, not data).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from atft.config import Config
from atft.data.schema import (
    feature_columns,
    legit_tail,
    missing,
    selection_problems,
    target_columns,
)
from atft.data.source import scan
from atft.data.stats import ENGINE, _Plan, _Scan, _scan, remember_row_groups
from atft.errors import DataError
from atft.health.result import CheckResult
from atft.horizons import Horizons, looks_like_target

CheckFn = Callable[[pl.LazyFrame, Config], list[CheckResult]]
CONST_ATOL = 1e-12  # absolute spread below which values count as equal
CONST_RTOL = 1e-7  # relative spread (float32 resolution) below which values count as equal
N_EXAMPLES = 5  # failing cases listed per result


# ----------------------------------------------------------------------------- shared pieces


def _fmt(x: float) -> str:
    """A figure as it appears in messages and examples."""
    return f"{x:.4g}"


def _ratio_results(kind: str, ratios: dict[str, float], limit: float, cause: str) -> list[CheckResult]:
    """One ``kind[column]`` result per column: its null/NaN share <= ``limit``."""
    return [CheckResult.compare(f"{kind}[{c}]", r, limit, "<=",
                                f"{c}: {_fmt(r)} of the rows are null/NaN ({cause}). Fix: repair the "
                                "column upstream or drop it (atft filter-data).") for c, r in ratios.items()]


_MEMO: ContextVar[dict[str, Any] | None] = ContextVar("atft_check_data_memo", default=None)
T = TypeVar("T")


def _shared(key: str, compute: Callable[[], T]) -> T:
    """``compute()`` once per ``run_checks`` call (the checks of one run share their aggregates);
    outside ``run_checks`` every call computes afresh."""
    memo = _MEMO.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]  # type: ignore[no-any-return]


def _zero_spread(hi: pl.Expr, lo: pl.Expr) -> pl.Expr:
    """``hi - lo`` within float32 resolution of the values (see CONST_ATOL / CONST_RTOL)."""
    return (hi - lo) <= CONST_ATOL + CONST_RTOL * pl.max_horizontal(hi.abs(), lo.abs())


# ----------------------------------------------------------------------------- which pass: alone or shared


def _plan(lf: pl.LazyFrame, cfg: Config, part: str) -> _Plan:
    """The pass for ``part``: "all" (``run_checks``), or what one check alone needs: "rows"
    (``date_stats``), "targets", "ret" (1-day bound) or "leak"."""
    schema, d, hz = lf.collect_schema(), cfg.data, Horizons.from_config(cfg)
    sel, problems = selection_problems(schema, cfg)
    feats = [f for f in sel if f in schema and schema[f].is_numeric()] if part in ("all", "rows", "leak") else []
    targets = target_columns(schema, cfg) if part != "ret" else []
    floats = [n for n, t in schema.items() if t.is_float()] if part in ("all", "rows") else []
    in_block = {c for c in (*feats, *targets) if schema[c] == pl.Float32}
    exact = list(dict.fromkeys([f for f in feats if schema[f] != pl.Float32 and part != "leak"]
                               + [c for c in floats if c not in in_block]))
    t1 = hz.targets[hz.index(1)] if 1 in hz.horizons else None
    return _Plan(d.date_col, d.code_col if part in ("all", "rows", "targets") else None, feats, targets,
                 [hz.horizons[hz.targets.index(t)] for t in targets] if part in ("all", "targets") else [],
                 exact, floats, part in ("all", "leak") and not problems and bool(feats) and bool(targets),
                 (t1, cfg.health.max_abs_return_1d) if t1 is not None and t1 in schema and part in ("all", "ret") else None)


def _scan_stats(lf: pl.LazyFrame, cfg: Config, part: str) -> _Scan:
    """Inside ``run_checks`` one pass measures everything for every check; alone, a check's pass
    reads only the columns it needs (see ``_plan``)."""
    if _MEMO.get() is None:
        return _scan(lf, _plan(lf, cfg, part))
    return _shared("scan", lambda: _scan(lf, _plan(lf, cfg, "all")))


# ----------------------------------------------------------------------------- aggregates of the pass


def date_stats(lf: pl.LazyFrame, cfg: Config) -> pl.DataFrame:
    """Per date (date order), from the one streaming pass, everything the row-wise checks need.

    Columns: ``Date``, ``len`` (rows), per feature f ``m:f`` (null/NaN count), ``k:f``
    (non-missing count), ``lo:f`` / ``hi:f`` (min / max over the non-missing values, null when
    none), per float column c ``i:c`` (+-inf count), ``stocks`` (distinct codes). Shared by the
    checks of one ``run_checks`` call.

    Shapes:
        -> ``[G, 3 + 4 F + C]`` frame: G dates (date order, a null date first), F features,
        C float columns.
    """
    def compute() -> pl.DataFrame:
        s, u32 = _scan_stats(lf, cfg, "rows"), pl.UInt32
        cols = [s.dates, pl.Series("len", s.rows, u32)]
        for j, f in enumerate(s.plan.feats):
            cols += [pl.Series(f"m:{f}", s.miss[:, j], u32), pl.Series(f"k:{f}", s.rows - s.miss[:, j], u32)]
            if s.exact is not None and f"lo:{f}" in s.exact.columns:  # not float32: its own dtype
                cols += [s.exact[f"lo:{f}"], s.exact[f"hi:{f}"]]
            else:
                cols += [pl.Series(f"lo:{f}", s.lo[:, j]).fill_nan(None), pl.Series(f"hi:{f}", s.hi[:, j]).fill_nan(None)]
        cols += [pl.Series(f"i:{c}", s.inf[c], u32) for c in s.plan.floats]
        return pl.DataFrame([*cols, pl.Series("stocks", s.stocks, u32)])

    return _shared("date_stats", compute)


def _target_date_stats(lf: pl.LazyFrame, cfg: Config) -> tuple[list[str], pl.DataFrame]:
    """(targets, per date: missing count ``m:t`` and eligible count ``n:t`` per target, tail
    excluded), shared by the checks of one ``run_checks`` call."""
    return _shared("target_date_stats", lambda: _compute_target_date_stats(lf, cfg))


def _compute_target_date_stats(lf: pl.LazyFrame, cfg: Config) -> tuple[list[str], pl.DataFrame]:
    """``_target_date_stats`` from the pass's (date, code) bitmap (``_Accumulator._tail``), or
    by ``_polars_target_date_stats`` where the pass has no tail (duplicate rows, > 64 targets)."""
    s = _scan_stats(lf, cfg, "targets")
    targets = s.plan.targets
    if not targets:
        return [], pl.DataFrame()
    if s.target_miss is None or s.target_rows is None:  # duplicate (Code, Date): polars' ordinal rank
        return _polars_target_date_stats(lf, cfg)
    return targets, pl.DataFrame([s.dates, *(pl.Series(f"{k}:{t}", a[:, j], pl.UInt32) for j, t in enumerate(targets)
                                             for k, a in (("m", s.target_miss), ("n", s.target_rows)))])


def _polars_target_date_stats(lf: pl.LazyFrame, cfg: Config) -> tuple[list[str], pl.DataFrame]:
    """``_target_date_stats`` by a polars group_by (the tail by ``legit_tail``); used when
    duplicate rows make "the last h rows of a stock" depend on the row order."""
    schema = lf.collect_schema()
    d, hz = cfg.data, Horizons.from_config(cfg)
    pairs = [(h, t) for h, t in zip(hz.horizons, hz.targets, strict=True) if t in schema]
    tails = [legit_tail(h, d.code_col, d.date_col).alias(f"_tail:{t}") for h, t in pairs]
    agg = [e for _, t in pairs for e in (
        (missing(t, schema[t]) & ~pl.col(f"_tail:{t}")).sum().alias(f"m:{t}"),
        (~pl.col(f"_tail:{t}")).sum().alias(f"n:{t}"))]
    stats = (lf.select(d.code_col, d.date_col, *(t for _, t in pairs)).with_columns(tails)
             .group_by(d.date_col).agg(agg).sort(d.date_col).collect(engine=ENGINE))
    return [t for _, t in pairs], stats


# ----------------------------------------------------------------------------- the checks


def check_feature_columns(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """The feature selection is valid: figure = number of problems (see ``feature_columns``)."""
    feats, problems = selection_problems(lf.collect_schema(), cfg)
    return [CheckResult.compare("feature_columns", len(problems), 0, "<=", " ".join(problems),
                                [f"{len(feats)} features"])]


def check_target_columns(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Every configured target column exists (else name the missing ones and the look-alikes)."""
    schema = lf.collect_schema()
    hz = Horizons.from_config(cfg)
    absent = [t for t in hz.targets if t not in schema]
    alike = sorted(c for c in schema.names() if looks_like_target(c) and c not in hz.targets)
    guess = Counter(re.sub(r"\d+", "{h}", c, count=1) for c in alike).most_common(1)
    hint = f" (the data looks like data.target_template='{guess[0][0]}')" if guess else ""
    msg = (f"target columns {absent} missing (template '{hz.template}', horizons {list(hz.horizons)}); "
           f"columns that look like targets: {alike or 'none'}{hint}. Fix: set data.target_template / "
           "data.horizons to the data's naming, or rebuild the dataset with these targets.")
    return [CheckResult.compare("target_columns", len(absent), 0, "<=", msg, absent)]


def check_target_nan_ratio(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Per target: null/NaN share outside the legitimate tail <= health.max_nan_ratio."""
    targets, s = _target_date_stats(lf, cfg)
    ratios = {t: (s[f"m:{t}"].sum() / n if (n := s[f"n:{t}"].sum()) else math.nan) for t in targets}
    return _ratio_results("target_nan_ratio", ratios, cfg.health.max_nan_ratio,
                          "outside the legitimate last-h-rows tail")


def check_target_date_nan_ratio(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Per target: the worst date's null/NaN share (tail excluded) <= health.max_date_nan_ratio."""
    targets, s = _target_date_stats(lf, cfg)
    out, limit, date = [], cfg.health.max_date_nan_ratio, cfg.data.date_col
    for t in targets:
        r = (s.select(date, pl.when(pl.col(f"n:{t}") > 0).then(pl.col(f"m:{t}") / pl.col(f"n:{t}")).alias("r"))
             .filter(pl.col("r").is_not_null()).sort("r", descending=True))
        worst = float(r["r"][0]) if r.height else math.nan
        bad = r.filter(pl.col("r") > limit)
        ex = [f"{row[0]}: {_fmt(row[1])}" for row in bad.head(N_EXAMPLES).rows()]
        out.append(CheckResult.compare(
            f"target_date_nan_ratio[{t}]", worst, limit, "<=",
            f"{t} is mostly missing on {bad.height} date(s) (a whole missing day hides in the global "
            "ratio). Fix: repair those dates upstream or drop them (atft filter-data).", ex))
    return out


def check_feature_nan_ratio(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Per feature: null/NaN share over all rows <= health.max_nan_ratio (from ``date_stats``)."""
    feats, s = feature_columns(lf.collect_schema(), cfg), date_stats(lf, cfg)
    rows = int(s["len"].sum())
    ratios = {f: (int(s[f"m:{f}"].sum()) / rows if rows else math.nan) for f in feats}
    return _ratio_results("feature_nan_ratio", ratios, cfg.health.max_nan_ratio, "over all rows")


def check_feature_date_nan_ratio(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Worst (feature, date) null/NaN share <= health.max_date_nan_ratio (from ``date_stats``)."""
    feats, date = feature_columns(lf.collect_schema(), cfg), cfg.data.date_col
    per_date = (date_stats(lf, cfg).select(date, *[(pl.col(f"m:{f}") / pl.col("len")).alias(f) for f in feats])
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


def check_infinite(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """No +-inf in any float column (per-column counts from ``date_stats``)."""
    s = date_stats(lf, cfg)
    counts = {c.removeprefix("i:"): int(s[c].sum()) for c in s.columns if c.startswith("i:")}
    bad = {c: n for c, n in counts.items() if n}
    return [CheckResult.compare("infinite_values", sum(bad.values()), 0, "<=",
                                f"+-inf in columns {sorted(bad)} (a division by zero upstream, e.g. a "
                                "return on a zero price). Fix: replace them with null at the source.",
                                [f"{c}: {n}" for c, n in sorted(bad.items())])]


def check_duplicates(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """No duplicate (Code, Date): figure = rows minus distinct keys (per date: rows - distinct codes)."""
    code, date = cfg.data.code_col, cfg.data.date_col
    s = date_stats(lf, cfg)
    extra = int(s["len"].sum() - s["stocks"].sum())
    ex: list[object] = []
    if extra:
        ex = (lf.group_by(code, date).len().filter(pl.col("len") > 1).sort(code, date)
              .head(N_EXAMPLES).collect(engine=ENGINE).rows())
    return [CheckResult.compare("duplicate_rows", extra, 0, "<=",
                                f"{extra} extra rows share a (Code, Date) with another row. Fix: keep one "
                                "row per stock and date (deduplicate upstream).", ex)]


def check_min_stocks(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Every date has at least data.min_stocks stocks (distinct codes, from ``date_stats``)."""
    date, k = cfg.data.date_col, cfg.data.min_stocks
    per = date_stats(lf, cfg).select(date, pl.col("stocks").alias("n")).sort("n", date)
    bad = per.filter(pl.col("n") < k)
    return [CheckResult.compare("min_stocks_per_date", float(per["n"].min()) if per.height else math.nan,
                                k, ">=", f"{bad.height} date(s) have fewer than data.min_stocks={k} stocks. "
                                "Fix: drop those dates (start the panel later) or lower data.min_stocks.",
                                [f"{d}: {n}" for d, n in bad.head(N_EXAMPLES).rows()])]


def check_constant_features(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """No model-input column is constant over the whole frame (or entirely missing)."""
    feats = feature_columns(lf.collect_schema(), cfg)
    row = (date_stats(lf, cfg).select([_zero_spread(pl.col(f"hi:{f}").max(), pl.col(f"lo:{f}").min())
                                       .fill_null(True).alias(f) for f in feats]).row(0, named=True))
    const = [f for f in feats if row[f]]
    return [CheckResult.compare("constant_feature", len(const), 0, "<=",
                                f"features {const[:N_EXAMPLES]} are constant on every row: the model "
                                "cannot learn from them. Fix: repair the feature pipeline or add them to "
                                "data.exclude.", const)]


def check_cs_constant_features(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Share of dates on which a feature is cross-sectionally constant <= max_constant_date_share."""
    feats = feature_columns(lf.collect_schema(), cfg)
    two = {f: pl.col(f"k:{f}") >= 2 for f in feats}  # dates with a cross-section to compare
    row = (date_stats(lf, cfg)
           .select([((_zero_spread(pl.col(f"hi:{f}"), pl.col(f"lo:{f}")) & two[f]).sum() / two[f].sum()).alias(f)
                    for f in feats]).row(0, named=True))
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


def check_leakage(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Per target: max over features of median-over-dates |Pearson(feature, target)| <= leak_corr."""
    schema = lf.collect_schema()
    feats, targets = feature_columns(schema, cfg), target_columns(schema, cfg)
    if not targets:
        return []
    leak = _scan_stats(lf, cfg, "leak").leak
    meds = leak if leak is not None else np.full((len(feats), len(targets)), np.nan)  # [F, t]
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


def check_return_bound(lf: pl.LazyFrame, cfg: Config) -> list[CheckResult]:
    """Share of 1-day targets with |r| > health.max_abs_return_1d must be 0 (no 1-day horizon: none)."""
    hz, schema, d = Horizons.from_config(cfg), lf.collect_schema(), cfg.data
    if 1 not in hz.horizons or hz.targets[hz.index(1)] not in schema:
        return []
    t, bound = hz.targets[hz.index(1)], cfg.health.max_abs_return_1d
    y = pl.col(t).fill_nan(None)
    n_bad, n_valid = _scan_stats(lf, cfg, "ret").ret
    share = n_bad / n_valid if n_valid else math.nan
    ex: list[object] = []
    if n_bad:
        ex = (lf.filter(y.abs() > bound).select(d.code_col, d.date_col, t).sort(t, descending=True)
              .head(N_EXAMPLES).collect(engine=ENGINE).rows())
    return [CheckResult.compare(f"return_bound_1d[{t}]", share, 0.0, "<=",
                                f"{n_bad} one-day returns exceed |{bound}| (unadjusted split, price unit "
                                "change or a bad tick). Fix: use split-adjusted prices and remove bad ticks.",
                                ex)]


CHECKS: dict[str, CheckFn] = {
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
FEATURE_CHECKS = frozenset({"feature_nan_ratio", "feature_date_nan_ratio", "constant_feature",
                            "cs_constant_feature", "leakage"})


def as_lazy(data: pl.LazyFrame | pl.DataFrame | str | Path, cfg: Config) -> pl.LazyFrame:
    """A LazyFrame from a frame or a dataset path (``atft.data.source.scan``), ids checked.

    Raises:
        DataError: the frame lacks data.code_col / data.date_col (a path: see ``scan``).
    """
    if isinstance(data, (str, Path)):
        lf = scan(data, cfg.data.code_col, cfg.data.date_col)
        remember_row_groups(lf, data)  # its batches: whole row groups
        return lf
    lf = data.lazy()
    missing_ids = [c for c in (cfg.data.code_col, cfg.data.date_col) if c not in lf.collect_schema()]
    if missing_ids:
        raise DataError(f"frame has no {missing_ids} column(s). Fix: name the stock id and date columns "
                        "as data.code_col / data.date_col say.")
    return lf


def run_checks_by_name(lf_or_path: pl.LazyFrame | pl.DataFrame | str | Path,
                       cfg: Config) -> dict[str, list[CheckResult]]:
    """Every check in ``CHECKS`` over one shared pass: check name -> its results, registry order.

    The checks in ``FEATURE_CHECKS`` are left out when the feature selection itself fails.
    """
    lf = as_lazy(lf_or_path, cfg)
    selection_ok = check_feature_columns(lf, cfg)[0].passed
    out: dict[str, list[CheckResult]] = {}
    token = _MEMO.set({})  # aggregates shared by the checks of this call only
    try:
        for name, fn in CHECKS.items():
            if name in FEATURE_CHECKS and not selection_ok:
                continue
            out[name] = fn(lf, cfg)
    finally:
        _MEMO.reset(token)
    return out


def run_checks(lf_or_path: pl.LazyFrame | pl.DataFrame | str | Path, cfg: Config) -> list[CheckResult]:
    """Run every check in ``CHECKS`` (one pass); feature checks are skipped when the selection
    itself fails. The results of ``run_checks_by_name``, flat."""
    return [r for results in run_checks_by_name(lf_or_path, cfg).values() for r in results]
