"""Honest per-date cross-sectional metrics (design.md section 5; they are the gate).

Every metric is computed PER DATE over the stocks valid that day (finite prediction AND finite
target), then averaged over dates. Dates with fewer than ``min_stocks`` valid stocks are skipped
and counted (``n_dates_skipped``). Inputs are flat arrays ``pred [M]``, ``target [M]``,
``date_id [M]`` (int, datetime64 or date objects); all arithmetic is float64 and vectorized:
rows are sorted by date once and reduced per segment with ``np.add.reduceat``.

Definitions (in this module, "date" means a date kept after the ``min_stocks`` filter):

* IC: mean over dates of Pearson(pred, target). A date on which pred or target is exactly
  constant has IC NaN (never a number); such dates are counted in ``n_dates_nan_ic`` and left
  out of the mean; the mean is NaN when no date has a finite IC.
* RankIC: the same with Spearman = Pearson of AVERAGE ranks (ties share their mean rank, as
  ``scipy.stats.rankdata(method="average")``). Ranks are never broken by row position, so a
  constant prediction cannot score a RankIC (failure mode 7).
* ICIR: mean / std (ddof=1) of the finite daily ICs; not annualized.
* yhat_std: mean over dates of the cross-sectional std of pred with ddof=0 (the day's
  cross-section is the whole population; exactly 0 for a constant prediction).
  yhat_std_pooled: std (ddof=0) over all valid rows of the kept dates. y_std likewise.
* scale: mean over dates of std(pred) / std(target) (ddof=0 both; dates with a constant target
  left out).
* hit_rate: share of valid rows with sign(pred) == sign(target), over the rows where both are
  non-zero (a zero forecast takes no side, a zero return has none); NaN if no such row.
* sharpe: daily long-short portfolio, equal weight long the top quintile and short the bottom
  quintile of pred, ``r_t = mean(target | top) - mean(target | bottom)``;
  ``Sharpe = mean(r) / std(r, ddof=1) * sqrt(252)`` (``periods_per_year``; the same factor for
  every horizon, so h-day overlapping returns are annualized as if daily). No sign flips.
  Quintiles by average rank (tie rule in ``long_short_returns``): tied stocks always land in the
  same bucket, so a constant prediction has empty extreme buckets and r_t NaN on every date; the
  long-short of a constant prediction is undefined and its Sharpe is NaN. Gross by default;
  ``sharpe_net`` subtracts ``cost`` per unit of turnover when codes are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from atft.errors import InputError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
PERIODS_PER_YEAR = 252.0


@dataclass(frozen=True)
class _Segments:
    """Valid rows of the kept dates, sorted by date (stable), and their date segments.

    Shapes:
        pred, target, seg, rows: ``[M']`` (M' valid rows on kept dates); starts, counts,
        dates: ``[D]`` (kept dates, ascending).
    """

    pred: F64
    target: F64
    seg: I64  # kept-date index of each sorted row
    rows: I64  # position of each sorted row in the caller's arrays
    starts: I64
    counts: I64
    dates: NDArray[Any]
    n_skipped: int
    m: int  # rows the caller passed

    @property
    def n_dates(self) -> int:
        return int(self.counts.shape[0])

    def sum(self, x: F64) -> F64:
        """Per-date sums of a sorted row array ``x [M']`` -> ``[D]``."""
        if self.n_dates == 0:
            return np.zeros(0)
        return np.add.reduceat(x, self.starts)

    def is_constant(self, x: F64) -> NDArray[np.bool_]:
        """Per-date "every value identical" (exact, no rounding tolerance) -> ``[D]``."""
        if self.n_dates == 0:
            return np.zeros(0, dtype=bool)
        return np.minimum.reduceat(x, self.starts) == np.maximum.reduceat(x, self.starts)

    def centered(self, x: F64) -> F64:
        """``x`` minus its date mean (two-pass, for accuracy) -> ``[M']``."""
        return x - (self.sum(x) / self.counts)[self.seg]

    def std(self, x: F64) -> F64:
        """Per-date std with ddof=0, exactly 0 for a constant date -> ``[D]``."""
        xc = self.centered(x)
        sd = np.sqrt(self.sum(xc * xc) / self.counts)
        return np.where(self.is_constant(x), 0.0, sd)

    def pearson(self, x: F64, y: F64) -> F64:
        """Per-date Pearson r, NaN where x or y is constant that date -> ``[D]``."""
        xc, yc = self.centered(x), self.centered(y)
        sxy, sxx, syy = self.sum(xc * yc), self.sum(xc * xc), self.sum(yc * yc)
        undefined = self.is_constant(x) | self.is_constant(y)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = sxy / np.sqrt(sxx * syy)
        return np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))

    def average_ranks(self, x: F64) -> F64:
        """1-based average ranks of ``x`` within each date (ties share the mean rank) -> ``[M']``."""
        m = x.shape[0]
        if m == 0:
            return np.zeros(0)
        order = np.lexsort((x, self.seg))  # by date, then value; seg is already sorted
        xs, ss = x[order], self.seg[order]
        new_run = np.empty(m, dtype=bool)
        new_run[0] = True
        new_run[1:] = (xs[1:] != xs[:-1]) | (ss[1:] != ss[:-1])
        run_id = np.cumsum(new_run) - 1  # [M'] tie-run of each sorted value
        first = np.flatnonzero(new_run)  # [R] first sorted position of each run
        last = np.append(first[1:], m) - 1  # [R] last sorted position
        pos = np.arange(m) - self.starts[ss]  # 0-based position within the date
        avg = (pos[first] + pos[last]) / 2.0 + 1.0  # [R]
        ranks = np.empty(m)
        ranks[order] = avg[run_id]
        return ranks


def _as_flat(name: str, x: ArrayLike, dtype: Any = np.float64) -> NDArray[Any]:
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise InputError(f"{name} must be a flat array [M], got shape {a.shape}. "
                         "Fix: pass one horizon at a time, flattened (e.g. arr.ravel()).")
    return a


def _segments(pred: ArrayLike, target: ArrayLike, date_id: ArrayLike, min_stocks: int) -> _Segments:
    """Validate inputs, keep finite rows on dates with >= ``min_stocks`` of them, sort by date."""
    p, y = _as_flat("pred", pred), _as_flat("target", target)
    d = _as_flat("date_id", date_id, dtype=None)
    if not p.shape == y.shape == d.shape:
        raise InputError(f"pred {p.shape}, target {y.shape} and date_id {d.shape} must have the "
                         "same length [M]. Fix: pass aligned rows (one per stock and date).")
    if int(min_stocks) < 2:
        raise InputError(f"min_stocks={min_stocks} < 2: a correlation needs two stocks. "
                         "Fix: use min_stocks >= 2 (data.min_stocks, default 20).")
    if d.shape[0] == 0:
        uniq, inv = d[:0], np.zeros(0, dtype=np.int64)
    else:
        uniq, inv = np.unique(d, return_inverse=True)
    valid = np.isfinite(p) & np.isfinite(y)
    cnt = np.bincount(inv[valid], minlength=uniq.shape[0])
    keep = cnt >= int(min_stocks)  # [U]
    new_id = np.cumsum(keep) - 1  # kept-date index of each unique date
    rows = np.flatnonzero(valid & keep[inv])
    rows = rows[np.argsort(new_id[inv[rows]], kind="stable")]
    counts = cnt[keep].astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return _Segments(p[rows], y[rows], new_id[inv[rows]].astype(np.int64), rows.astype(np.int64),
                     starts, counts, uniq[keep], int((~keep).sum()), int(p.shape[0]))


def _codes(codes: ArrayLike | None, seg: _Segments, cost: float) -> NDArray[Any] | None:
    """Validated stock ids ``[M]`` (None when not given; then ``cost`` must be 0)."""
    if codes is None:
        if cost:
            raise InputError("cost > 0 needs codes to measure turnover. "
                             "Fix: pass codes=[M] stock ids.")
        return None
    c = _as_flat("codes", codes, dtype=None)
    if c.shape[0] != seg.m:
        raise InputError(f"codes has {c.shape[0]} rows for {seg.m} predictions. "
                         "Fix: pass one code per row.")
    return c


@dataclass(frozen=True)
class DailyIC:
    """Per-date IC of one prediction column.

    Shapes:
        dates, values, n_stocks: ``[D]`` over the dates kept (>= min_stocks valid stocks);
        values is NaN on dates where pred or target is constant.
    """

    dates: NDArray[Any]
    values: F64
    n_stocks: I64
    n_skipped: int  # dates with fewer than min_stocks valid stocks
    method: str = "pearson"

    @property
    def n_dates(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_nan(self) -> int:
        return int(np.isnan(self.values).sum())

    @property
    def finite(self) -> F64:
        return self.values[np.isfinite(self.values)]

    @property
    def mean(self) -> float:
        """Mean of the finite daily values (NaN if none)."""
        v = self.finite
        return float(v.mean()) if v.size else math.nan

    @property
    def icir(self) -> float:
        """mean / std (ddof=1) of the finite daily values, not annualized (NaN if < 2 or std 0)."""
        v = self.finite
        if v.size < 2:
            return math.nan
        sd = float(v.std(ddof=1))
        return float(v.mean()) / sd if sd > 0 else math.nan


def _daily_ic(seg: _Segments, method: str, pred_ranks: F64 | None = None) -> DailyIC:
    if method == "pearson":
        values = seg.pearson(seg.pred, seg.target)
    elif method == "spearman":
        rp = seg.average_ranks(seg.pred) if pred_ranks is None else pred_ranks
        values = seg.pearson(rp, seg.average_ranks(seg.target))
    else:
        raise InputError(f"method='{method}' is not an IC method. Fix: use 'pearson' or 'spearman'.")
    return DailyIC(seg.dates, values, seg.counts, seg.n_skipped, method)


def per_date_ic(pred: ArrayLike, target: ArrayLike, date_id: ArrayLike, min_stocks: int = 20,
                method: str = "pearson") -> DailyIC:
    """Per-date Pearson ("pearson") or Spearman ("spearman", average ranks) IC.

    Shapes:
        pred, target, date_id: ``[M]``; returns ``DailyIC`` over the ``D`` kept dates.
    """
    return _daily_ic(_segments(pred, target, date_id, min_stocks), method)


@dataclass(frozen=True)
class LongShort:
    """Daily top-minus-bottom quantile portfolio.

    Shapes:
        dates, gross, turnover, net, n_long, n_short: ``[D]`` over the kept dates; gross and
        net are NaN on dates where a bucket is empty (no position taken). turnover is
        ``sum_i |w_i,t - w_i,t-1|`` against the previous kept date (the first date: from cash),
        NaN when no codes were given.
    """

    dates: NDArray[Any]
    gross: F64
    turnover: F64
    net: F64
    n_long: I64
    n_short: I64
    n_skipped: int


def _long_short(seg: _Segments, codes: NDArray[Any] | None, n_quantiles: int,
                cost: float, pred_ranks: F64 | None = None) -> LongShort:
    d = seg.n_dates
    n = seg.counts[seg.seg]  # [M'] stocks on the row's date
    k = n // n_quantiles  # stocks per extreme bucket without ties
    r = seg.average_ranks(seg.pred) if pred_ranks is None else pred_ranks
    # a tie run belongs to a bucket iff its mean rank lies in the bucket's positions:
    # bottom = positions 1..k -> rank <= k + 0.5; top = positions n-k+1..n -> rank >= n-k+0.5
    bottom = r <= k + 0.5
    top = r >= n - k + 0.5
    n_long = np.bincount(seg.seg, weights=top, minlength=d).astype(np.int64)
    n_short = np.bincount(seg.seg, weights=bottom, minlength=d).astype(np.int64)
    held = (n_long > 0) & (n_short > 0)  # [D]
    with np.errstate(divide="ignore", invalid="ignore"):
        long_mean = np.bincount(seg.seg, weights=seg.target * top, minlength=d) / n_long
        short_mean = np.bincount(seg.seg, weights=seg.target * bottom, minlength=d) / n_short
    gross = np.where(held, long_mean - short_mean, np.nan)
    turnover = np.full(d, np.nan)
    if codes is not None:
        c = codes[seg.rows]
        _, cid = np.unique(c, return_inverse=True)
        ncode = int(cid.max()) + 1 if cid.size else 1
        key = seg.seg * ncode + cid
        if np.unique(key).size != key.size:
            raise InputError("codes repeat within a date, so portfolio weights are ambiguous. "
                             "Fix: pass one row per (date, code).")
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(held[seg.seg], top / n_long[seg.seg] - bottom / n_short[seg.seg], 0.0)
        # position on date t minus the same stock's position carried from t-1
        keys = np.concatenate((key, key + ncode))
        vals = np.concatenate((w, -w))
        uk, inv = np.unique(keys, return_inverse=True)
        delta = np.bincount(inv, weights=vals)
        turnover = np.bincount(uk // ncode, weights=np.abs(delta), minlength=d + 1)[:d]
    net = gross - cost * turnover if cost else gross.copy()
    return LongShort(seg.dates, gross, turnover, net, n_long, n_short, seg.n_skipped)


def long_short_returns(pred: ArrayLike, target: ArrayLike, date_id: ArrayLike,
                       codes: ArrayLike | None = None, min_stocks: int = 20, n_quantiles: int = 5,
                       cost: float = 0.0) -> LongShort:
    """Per-date equal-weight long top / short bottom quantile (by pred) returns.

    Tie rule: stocks are ranked by pred with AVERAGE ranks; with ``k = n // n_quantiles`` a stock
    is in the bottom bucket iff its rank <= k + 0.5 and in the top bucket iff its rank >=
    n - k + 0.5, i.e. a tie run goes wholly into the bucket that holds its middle position, or
    wholly out of it. Row order never decides a bucket. A date with an empty bucket takes no
    position (r_t NaN).

    Args:
        codes: stock ids ``[M]``, needed for turnover (and so for a non-zero ``cost``).
        cost: return cost per unit of turnover (0.001 = 10 bp per unit of traded weight; a full
            rebalance of both legs is 4 units, entering from cash 2).

    Shapes:
        pred, target, date_id, codes: ``[M]``; returns ``LongShort`` over the kept dates.
    """
    if n_quantiles < 2:
        raise InputError(f"n_quantiles={n_quantiles} < 2. Fix: use 5 (quintiles) or 10 (deciles).")
    seg = _segments(pred, target, date_id, min_stocks)
    return _long_short(seg, _codes(codes, seg, cost), int(n_quantiles), float(cost))


def sharpe(returns: ArrayLike, periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` over the finite returns.

    NaN when fewer than 2 finite returns or their std is 0 (never a sign flip).

    Shapes:
        returns: ``[D]``.
    """
    r = np.asarray(returns, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan
    sd = float(r.std(ddof=1))
    return float(r.mean()) / sd * math.sqrt(periods_per_year) if sd > 0 else math.nan


def compute_metrics(pred: ArrayLike, target: ArrayLike, date_id: ArrayLike, min_stocks: int = 20,
                    codes: ArrayLike | None = None, cost: float = 0.0,
                    periods_per_year: float = PERIODS_PER_YEAR) -> dict[str, float]:
    """All section-5 metrics of one prediction column (definitions in the module docstring).

    Keys: ic, rank_ic, icir, rank_icir, yhat_std, yhat_std_pooled, y_std, scale, hit_rate,
    sharpe, sharpe_net (== sharpe without cost), turnover (mean, NaN without codes),
    n_rows, n_dates, n_dates_skipped, n_dates_ic, n_dates_nan_ic, n_dates_rank_ic,
    n_dates_nan_rank_ic, n_dates_scale, n_dates_sharpe, n_hit_rows.

    Shapes:
        pred, target, date_id (, codes): ``[M]``.
    """
    seg = _segments(pred, target, date_id, min_stocks)
    c = _codes(codes, seg, cost)
    rp = seg.average_ranks(seg.pred)  # shared by RankIC and the quintile buckets
    ic = _daily_ic(seg, "pearson")
    ric = _daily_ic(seg, "spearman", rp)
    sd_p, sd_y = seg.std(seg.pred), seg.std(seg.target)
    ratio_ok = sd_y > 0
    p, y = seg.pred, seg.target
    signed = (p != 0) & (y != 0)
    ls = _long_short(seg, c, 5, float(cost), rp)

    def mean_or_nan(x: F64) -> float:
        return float(x.mean()) if x.size else math.nan

    def pooled_std(x: F64) -> float:
        if x.size == 0:
            return math.nan
        return 0.0 if x.min() == x.max() else float(x.std())

    return {
        "ic": ic.mean,
        "rank_ic": ric.mean,
        "icir": ic.icir,
        "rank_icir": ric.icir,
        "yhat_std": mean_or_nan(sd_p),
        "yhat_std_pooled": pooled_std(p),
        "y_std": mean_or_nan(sd_y),
        "scale": mean_or_nan(sd_p[ratio_ok] / sd_y[ratio_ok]),
        "hit_rate": mean_or_nan((np.sign(p[signed]) == np.sign(y[signed])).astype(np.float64)),
        "sharpe": sharpe(ls.gross, periods_per_year),
        "sharpe_net": sharpe(ls.net, periods_per_year),
        "turnover": mean_or_nan(ls.turnover[np.isfinite(ls.turnover)]) if c is not None else math.nan,
        "n_rows": int(p.size),
        "n_dates": seg.n_dates,
        "n_dates_skipped": seg.n_skipped,
        "n_dates_ic": ic.n_dates - ic.n_nan,
        "n_dates_nan_ic": ic.n_nan,
        "n_dates_rank_ic": ric.n_dates - ric.n_nan,
        "n_dates_nan_rank_ic": ric.n_nan,
        "n_dates_scale": int(ratio_ok.sum()),
        "n_dates_sharpe": int(np.isfinite(ls.gross).sum()),
        "n_hit_rows": int(signed.sum()),
    }
