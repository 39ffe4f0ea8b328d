"""Label checks (smoke): are the targets really the forward returns? (design.md failure modes 5, 12)

Read ``atft.data.labels.label_stats`` (one more pass over Code, Date and the targets): values in
the last h rows of a stock (a NaN filled with 0), excess exact zeros, and h-day targets that
compounding the 1-day targets does not reproduce (a shift, a backward-return fallback).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from atft.config import Config
from atft.health.checks.data import dataset_frame
from atft.health.context import HealthContext
from atft.health.registry import health_check
from atft.health.result import CheckResult
from atft.horizons import Horizons


def _tail_filled_with_zero(ctx: HealthContext) -> HealthContext:
    cfg, df = ctx.cfg, dataset_frame(ctx)
    t = Horizons.from_config(cfg).targets[-1]
    return ctx.replace(dataset=df.with_columns(pl.col(t).fill_null(0.0).fill_nan(0.0)))


@health_check(area="labels", fault=_tail_filled_with_zero)
def target_tail_values(label_stats: Any) -> list[CheckResult]:
    """No value in the last h rows of a stock's h-day target (it cannot be known: a NaN filled with 0)."""
    return [CheckResult.compare(
        f"target_tail_values[{t}]", float(label_stats.tail_values[t]), 0.0, "<=",
        f"{label_stats.tail_values[t]} of the {label_stats.tail_rows[t]} rows in the last h rows of a stock have a "
        f"value of {t}, which no forward return can have there (a missing target filled with 0.0 biases every "
        "metric). Fix: keep missing targets missing (null / NaN) when building the dataset.",
        examples=label_stats.examples.get(t, [])[:5]) for t in label_stats.targets]


def _missing_filled_with_zero(ctx: HealthContext) -> HealthContext:
    cfg, df = ctx.cfg, dataset_frame(ctx)
    t = Horizons.from_config(cfg).targets[-1]
    hole = (pl.int_range(pl.len()) % 20 == 3)  # 5 % of the rows lose their target, then get a 0.0
    return ctx.replace(dataset=df.with_columns(pl.when(hole).then(0.0).otherwise(pl.col(t)).alias(t)))


@health_check(area="labels", fault=_missing_filled_with_zero)
def target_zero_share(label_stats: Any, cfg: Config) -> list[CheckResult]:
    """The share of exact-zero h-day targets is not far above the share of exact-zero 1-day returns."""
    one = label_stats.one_day
    base = label_stats.zero_share(one) if one else 0.0
    margin = cfg.health.max_excess_zero_share
    out = []
    for t in label_stats.targets:
        share = label_stats.zero_share(t)
        excess = share - 2.0 * base
        out.append(CheckResult.compare(
            f"target_zero_share[{t}]", excess, margin, "<=",
            f"{share:.2%} of {t} is exactly 0, against {base:.2%} of the 1-day returns: missing targets were "
            "probably filled with 0.0. Fix: keep them missing (null / NaN) when building the dataset.",
            examples=[f"zero share {share:.4g}", f"1-day zero share {base:.4g}"]))
    return out


def _shifted_label(ctx: HealthContext) -> HealthContext:
    cfg, df = ctx.cfg, dataset_frame(ctx)
    hz = Horizons.from_config(cfg)
    t = next(t for h, t in zip(hz.horizons, hz.targets, strict=True) if h > 1)
    return ctx.replace(dataset=df.sort(cfg.data.code_col, cfg.data.date_col).with_columns(
        pl.col(t).shift(1).over(cfg.data.code_col)))  # the label of the day before: a backward return


@health_check(area="labels", fault=_shifted_label)
def label_is_forward_return(label_stats: Any, cfg: Config) -> list[CheckResult]:
    """Compounding the 1-day target over t..t+h-1 reproduces the h-day target (where rows are consecutive)."""
    if label_stats.one_day is None:
        return [CheckResult.not_applicable("label_is_forward_return", "no 1-day target to compound")]
    limit, tol = cfg.health.max_label_mismatch_share, cfg.health.label_tolerance
    out = []
    for t in label_stats.compared:
        n, bad = label_stats.compared[t], label_stats.disagree[t]
        out.append(CheckResult.compare(
            f"label_is_forward_return[{t}]", bad / n if n else float("nan"), limit, "<=",
            f"{bad} of {n} rows of {t} differ from the compounded 1-day targets by more than {tol:g} (or no row "
            f"could be compared): the label is not the forward return over t..t+h (a shift, a backward-return "
            "fallback, another horizon). Fix: build targets as Close(t+h) / Close(t) - 1 (atft build-dataset).",
            examples=label_stats.examples.get(t, [])[:5]))
    return out
