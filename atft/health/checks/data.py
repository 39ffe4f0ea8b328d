"""Dataset checks (smoke): one registered check per check of ``atft.health.dataset_checks.CHECKS``.

All of them read ONE pass over the dataset (the shared ``dataset_results`` resource). Each has a
planted fault written for any dataset in the data contract (ids, features, targets): it rewrites
the frame under test so that exactly its check has something to find.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from atft.data import schema
from atft.health.context import HealthContext
from atft.health.dataset_checks import CHECKS, FEATURE_CHECKS
from atft.health.registry import health_check
from atft.health.result import CheckResult
from atft.horizons import Horizons

Plant = Callable[[pl.DataFrame, Any], pl.DataFrame]


def dataset_frame(ctx: HealthContext) -> pl.DataFrame:
    """The dataset under test as one frame (a fault rewrites it)."""
    data = ctx.resolve("dataset")
    if isinstance(data, pl.DataFrame):
        return data
    from atft.data.source import resolve_files

    return pl.concat([pl.read_parquet(f) for f in resolve_files(str(data))], how="vertical_relaxed")


def _roles(df: pl.DataFrame, cfg: Any) -> tuple[list[str], list[str], str, str]:
    hz = Horizons.from_config(cfg)
    return schema.feature_columns(df.schema, cfg), hz.targets, cfg.data.code_col, cfg.data.date_col


def _nth_date(df: pl.DataFrame, cfg: Any, k: int = 10) -> Any:
    dates = df.get_column(cfg.data.date_col).unique().sort()
    return dates[min(k, dates.len() - 1)]


def _some_codes(df: pl.DataFrame, cfg: Any, share: float) -> pl.Expr:
    codes = df.get_column(cfg.data.code_col).unique().sort()
    return pl.col(cfg.data.code_col).is_in(codes.head(max(1, int(share * codes.len()))).implode())


def _target_nan(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:  # float NaN (not null) in 20 % of the stocks
    _, targets, _, _ = _roles(df, cfg)
    t = targets[0]
    return df.with_columns(pl.when(_some_codes(df, cfg, 0.2)).then(float("nan")).otherwise(pl.col(t)).alias(t))


def _missing_date(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:  # a whole date without its 1st target
    _, targets, _, date = _roles(df, cfg)
    return df.with_columns(pl.when(pl.col(date) == _nth_date(df, cfg)).then(None).otherwise(pl.col(targets[0]))
                           .alias(targets[0]))


def _feature_nan(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    f = _roles(df, cfg)[0][0]
    return df.with_columns(pl.when(_some_codes(df, cfg, 0.2)).then(float("nan")).otherwise(pl.col(f)).alias(f))


def _feature_missing_date(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    f, date = _roles(df, cfg)[0][0], cfg.data.date_col
    return df.with_columns(pl.when(pl.col(date) == _nth_date(df, cfg)).then(None).otherwise(pl.col(f)).alias(f))


def _infinite(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    f = _roles(df, cfg)[0][0]
    return df.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(float("inf"))
                           .otherwise(pl.col(f).cast(pl.Float64)).alias(f))


def _duplicates(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    return pl.concat([df, df.slice(3, 2)])


def _few_stocks(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    keep = max(1, cfg.data.min_stocks // 2)
    return df.filter(~((pl.col(cfg.data.date_col) == _nth_date(df, cfg))
                       & (pl.col(cfg.data.code_col).rank("dense").over(cfg.data.date_col) > keep)))


def _constant(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    return df.with_columns(pl.lit(0.0, pl.Float32).alias(_roles(df, cfg)[0][0]))


def _cs_constant(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:  # a market-wide value on every date
    f, date = _roles(df, cfg)[0][0], cfg.data.date_col
    return df.with_columns(pl.col(date).dt.ordinal_day().cast(pl.Float32).alias(f))


def _leak(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:  # a feature that is the 5-day target plus noise
    _, targets, _, _ = _roles(df, cfg)
    noise = np.random.default_rng(1).normal(0, 1e-4, df.height)
    return df.with_columns((pl.col(targets[-1]) + pl.Series(noise)).alias("f_leak"))


def _target_like_feature(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    return df.with_columns(pl.col(_roles(df, cfg)[1][-1]).alias("fwd_ret_5"))


def _renamed_targets(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:  # the recovery plan's horizon_{h} naming
    hz = Horizons.from_config(cfg)
    return df.rename({t: f"horizon_{h}" for h, t in zip(hz.horizons, hz.targets, strict=True)})


def _return_bound(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    t = Horizons.from_config(cfg).targets[0]
    return df.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(5.0).otherwise(pl.col(t)).alias(t))


def _too_short(df: pl.DataFrame, cfg: Any) -> pl.DataFrame:  # 10 dates: no long-horizon target can exist
    return df.filter(pl.col(cfg.data.date_col) <= _nth_date(df, cfg, 9))


PLANTS: dict[str, Plant] = {
    "dataset_size": _too_short,
    "feature_columns": _target_like_feature,
    "target_columns": _renamed_targets,
    "target_nan_ratio": _target_nan,
    "target_date_nan_ratio": _missing_date,
    "feature_nan_ratio": _feature_nan,
    "feature_date_nan_ratio": _feature_missing_date,
    "infinite_values": _infinite,
    "duplicate_rows": _duplicates,
    "min_stocks_per_date": _few_stocks,
    "constant_feature": _constant,
    "cs_constant_feature": _cs_constant,
    "leakage": _leak,
    "return_bound_1d": _return_bound,
}


def _fault(plant: Plant) -> Callable[[HealthContext], HealthContext]:
    def fault(ctx: HealthContext) -> HealthContext:
        return ctx.replace(dataset=plant(dataset_frame(ctx), ctx.cfg))

    fault.__name__ = f"plant_{plant.__name__.lstrip('_')}"
    return fault


def _registered(name: str) -> Callable[..., list[CheckResult]]:
    def check(dataset_results: dict[str, list[CheckResult]]) -> list[CheckResult]:
        if name in dataset_results:
            return dataset_results[name]
        for blocker in ("dataset_size", "target_columns"):  # an empty / short dataset, text targets
            failed = [r for r in dataset_results.get(blocker, []) if not r.passed]
            if failed:
                return [CheckResult.not_applicable(name, f"not measured: {blocker} failed ({failed[0].message})")]
        if name in FEATURE_CHECKS:
            msg = " ".join(r.message for r in dataset_results.get("feature_columns", []) if not r.passed)
            return [CheckResult.failure(name, f"not measured: the feature selection failed ({msg})")]
        raise RuntimeError(f"dataset check '{name}' produced no result")

    check.__name__ = check.__qualname__ = name
    check.__doc__ = (CHECKS[name].__doc__ or name).strip().splitlines()[0]
    return health_check(area="dataset", fault=_fault(PLANTS[name]))(check)


if set(PLANTS) != set(CHECKS):  # every dataset check has its planted fault
    raise RuntimeError(f"dataset checks without a planted fault: {sorted(set(CHECKS) ^ set(PLANTS))}")
for _name in CHECKS:  # module attributes, so the registry finds them
    globals()[_name] = _registered(_name)
