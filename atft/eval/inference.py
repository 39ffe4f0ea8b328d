"""Statistical inference on daily IC series: block-bootstrap CI of the mean, paired t of a
difference, the summary of a series (mean, std, ICIR, dates).

Daily IC is autocorrelated (the signal strength of a market persists), so the CI of a mean IC is
a circular block bootstrap; the paired t assumes independent days and is read next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from atft.errors import InputError
from atft.eval.metrics import DailyIC


def ic_summary(daily: ArrayLike) -> dict[str, float]:
    """Mean, std (ddof=1), ICIR (mean/std, not annualized) and date count of a daily IC series.

    Shapes:
        daily: ``[D]`` with NaN for skipped dates.
    """
    d = np.asarray(daily, dtype=np.float64)
    v = d[np.isfinite(d)]
    if v.size < 2:
        return {"ic": float("nan"), "ic_std": float("nan"), "icir": float("nan"), "n_dates": int(v.size)}
    mean, std = float(v.mean()), float(v.std(ddof=1))
    return {"ic": mean, "ic_std": std, "icir": mean / std if std > 0 else float("nan"),
            "n_dates": int(v.size)}


def ic_bootstrap_ci(daily_ic: ArrayLike | DailyIC, block: int | None = None, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Circular block bootstrap percentile CI for the mean daily IC.

    NaN daily values are dropped first (in date order). Each resample concatenates
    ``ceil(n / block)`` circular blocks of ``block`` consecutive dates starting at uniform
    random dates, truncated to n; the CI is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    percentiles of the ``n_boot`` resample means. Same seed -> same interval.

    Args:
        block: block length; None = ``ceil(n ** (1/3))`` (at least 1).

    Shapes:
        daily_ic: ``[D]`` in date order. Returns ``(lo, hi)``; ``(nan, nan)`` if < 2 finite days.
    """
    v = daily_ic.values if isinstance(daily_ic, DailyIC) else np.asarray(daily_ic, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = v.size
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise InputError(f"level={level} must be in (0, 1) and n_boot={n_boot} >= 1. "
                         "Fix: e.g. level=0.95, n_boot=1000.")
    if n < 2:
        return math.nan, math.nan
    b = max(1, math.ceil(n ** (1.0 / 3.0))) if block is None else int(block)
    if b < 1:
        raise InputError(f"block={block} must be >= 1. Fix: pass None for ceil(n^(1/3)).")
    b = min(b, n)
    n_blocks = math.ceil(n / b)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))  # [B, K]
    idx = (starts[:, :, None] + np.arange(b)) % n  # [B, K, b]
    means = v[idx.reshape(n_boot, -1)[:, :n]].mean(axis=1)  # [B]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedTStat:
    """Paired t-statistic of the per-date IC difference a - b over common finite dates."""

    t: float
    mean_diff: float
    se: float
    n_dates: int


def paired_ic_tstat(ic_a: DailyIC | ArrayLike, ic_b: DailyIC | ArrayLike) -> PairedTStat:
    """``t = mean(d) / (std(d, ddof=1) / sqrt(n))`` for ``d = ic_a - ic_b`` per common date.

    Two ``DailyIC`` are aligned on their dates; plain arrays must already be aligned (same
    length). Dates where either IC is NaN are dropped. Assumes independent days; daily IC is
    autocorrelated, so read it with the block-bootstrap CI. NaN when < 2 dates or std 0.

    Shapes:
        ic_a, ic_b: ``[D_a]``, ``[D_b]`` (DailyIC) or ``[D]`` (arrays).
    """
    if isinstance(ic_a, DailyIC) and isinstance(ic_b, DailyIC):
        _, ia, ib = np.intersect1d(ic_a.dates, ic_b.dates, assume_unique=True, return_indices=True)
        a, b = ic_a.values[ia], ic_b.values[ib]
    elif isinstance(ic_a, DailyIC) or isinstance(ic_b, DailyIC):
        raise InputError("pass two DailyIC (aligned on dates) or two aligned arrays, not a mix. "
                         "Fix: use per_date_ic(...) for both.")
    else:
        a, b = np.asarray(ic_a, dtype=np.float64).ravel(), np.asarray(ic_b, dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise InputError(f"daily IC arrays differ in length ({a.size} vs {b.size}). "
                             "Fix: align them on dates or pass DailyIC objects.")
    d = a - b
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < 2:
        return PairedTStat(math.nan, float(d.mean()) if n else math.nan, math.nan, n)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    t = float(d.mean()) / se if se > 0 else math.nan
    return PairedTStat(t, float(d.mean()), se, n)
