"""filter-data: planted bad column / date / stock are dropped, clean data untouched, output passes the NaN checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atft.cli import main
from atft.config import Config
from atft.data.filter import filter_dataset
from atft.errors import DataError
from atft.health.dataset_checks import CHECKS

N_STOCKS, N_DATES = 25, 30
DATES = [dt.date(2023, 1, 2) + dt.timedelta(days=i) for i in range(N_DATES)]
NAN_CHECKS = ("target_nan_ratio", "target_date_nan_ratio", "feature_nan_ratio", "feature_date_nan_ratio")


def _cfg() -> Config:
    cfg = Config()
    cfg.data.horizons = [1, 5]
    return cfg


def _panel(seed: int = 0) -> pl.DataFrame:
    """25 stocks x 30 dates, features f0, f1, f2 (float) and f_cnt (int), targets null in the tail."""
    rng = np.random.default_rng(seed)
    n = N_STOCKS * N_DATES
    cols: dict[str, object] = {"Code": np.repeat([f"S{i:02d}" for i in range(N_STOCKS)], N_DATES),
                               "Date": DATES * N_STOCKS, "sector": np.repeat(np.arange(N_STOCKS) % 3, N_DATES)}
    for k in range(3):
        cols[f"f{k}"] = rng.normal(0, 1, n).astype(np.float32)
    cols["f_cnt"] = rng.integers(0, 100, n)
    day = np.tile(np.arange(N_DATES), N_STOCKS)
    for h in (1, 5):
        cols[f"feat_ret_{h}d"] = np.where(day < N_DATES - h, rng.normal(0, 0.02, n), np.nan)
    return pl.DataFrame(cols).with_columns(pl.col("feat_ret_1d", "feat_ret_5d").fill_nan(None))


def _null_targets_on(df: pl.DataFrame, days: list[int]) -> pl.DataFrame:
    on = pl.col("Date").is_in([DATES[j] for j in days])
    return df.with_columns(pl.when(on).then(None).otherwise(pl.col(t)).alias(t) for t in ("feat_ret_1d", "feat_ret_5d"))


def _planted() -> pl.DataFrame:
    df = _panel()
    df = df.with_columns(pl.when(pl.col("Code") < "S07").then(float("nan")).otherwise(pl.col("f2")).alias("f2"))
    df = _null_targets_on(df, [10])
    return df.with_columns(pl.when(pl.col("Code") == "S07").then(None).otherwise(pl.col(c)).alias(c)
                           for c in ("f0", "f1"))


def test_planted_column_date_and_stock_are_dropped(tmp_path: Path) -> None:
    _planted().write_parquet(tmp_path / "in.parquet")
    rep = filter_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", 0.05, _cfg())
    assert rep.dropped_features == {"f2": pytest.approx(7 / 25)}
    assert rep.dropped_dates == {DATES[10]: 1.0}
    # S07 on 29 dates: 2 of 3 kept features missing; eligible target cells 28 (1d) + 24 (5d)
    assert rep.dropped_codes == {"S07": pytest.approx(58 / (3 * 29 + 28 + 24))}
    assert rep.dropped_features_after_rows == {}
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.columns == ["Code", "Date", "sector", "f0", "f1", "f_cnt", "feat_ret_1d", "feat_ret_5d"]
    assert (rep.rows_in, rep.rows_out, out.height) == (750, 24 * 29, 24 * 29)
    assert DATES[10] not in out["Date"].to_list() and "S07" not in out["Code"].to_list()
    cfg = _cfg()
    for name in NAN_CHECKS:
        assert all(r.passed for r in CHECKS[name](out.lazy(), cfg)), name
    assert not all(r.passed for r in CHECKS["feature_nan_ratio"](_planted().lazy(), cfg))


def test_clean_data_is_untouched(tmp_path: Path) -> None:
    clean = _panel()
    clean.write_parquet(tmp_path / "in.parquet")
    rep = filter_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", 0.05, _cfg())
    assert (rep.dropped_features, rep.dropped_dates, rep.dropped_codes) == ({}, {}, {})
    assert_frame_equal(pl.read_parquet(tmp_path / "out.parquet"), clean)


def test_feature_over_bound_after_row_drops_is_dropped(tmp_path: Path) -> None:
    df = _panel().with_columns(pl.when(pl.col("Date") == DATES[0]).then(None).otherwise(pl.col("f1")).alias("f1"))
    _null_targets_on(df, list(range(11, 23))).write_parquet(tmp_path / "in.parquet")  # 12 dates
    rep = filter_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", 0.05, _cfg())
    assert rep.dropped_features == {}  # f1: 1/30 missing overall
    assert sorted(rep.dropped_dates) == DATES[11:23]
    assert rep.dropped_features_after_rows == {"f1": pytest.approx(1 / 18)}
    assert "f1" not in pl.read_parquet(tmp_path / "out.parquet").columns


def test_targets_are_never_dropped(tmp_path: Path) -> None:
    df = _panel().with_columns(pl.when(pl.col("Code") < "S08").then(float("nan"))
                               .otherwise(pl.col("feat_ret_5d")).alias("feat_ret_5d"))
    df.write_parquet(tmp_path / "in.parquet")
    rep = filter_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", 0.05, _cfg())
    out = pl.read_parquet(tmp_path / "out.parquet")
    # 8/25 of feat_ret_5d missing on every date with a 5-day target; the last 5 dates are its tail
    assert "feat_ret_5d" in out.columns and rep.dropped_features == {}
    assert rep.dropped_dates == {d: pytest.approx(8 / 25) for d in DATES[:25]}
    assert rep.dropped_codes == {} and sorted(out["Date"].unique()) == DATES[25:]
    rep = filter_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", 0.5, _cfg())
    assert (rep.dropped_dates, rep.rows_out) == ({}, 750)


def test_empty_input_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    _panel().head(0).write_parquet(tmp_path / "in.parquet")
    with pytest.raises(DataError, match="no rows to write.*Fix:"):
        filter_dataset(tmp_path / "in.parquet", tmp_path / "out.parquet", 0.05, _cfg())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_bad_arguments(tmp_path: Path) -> None:
    _panel().write_parquet(tmp_path / "in.parquet")
    with pytest.raises(DataError, match=r"not in \[0, 1\]"):
        filter_dataset(tmp_path / "in.parquet", tmp_path / "o.parquet", 1.5, _cfg())
    cfg = _cfg()
    cfg.data.target_template = "horizon_{h}"
    with pytest.raises(DataError, match="target columns missing"):
        filter_dataset(tmp_path / "in.parquet", tmp_path / "o.parquet", 0.05, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_cli_filter_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _planted().write_parquet(tmp_path / "in.parquet")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  horizons: [1, 5]\n")
    argv = ["filter-data", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o.parquet"),
            "--max-nan-ratio", "0.05", "--config", str(cfg_file)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dropped 1 feature columns: f2 (0.28)" in printed
    assert "dropped 1 dates: 2023-01-12 (1)" in printed and "dropped 1 stocks: S07" in printed
    assert main(argv[:-2]) == 2  # default horizons [1, 5, 10, 20]: feat_ret_10d missing


def test_a_filter_that_would_remove_every_feature_or_date_refuses(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    _planted().with_columns(pl.when(pl.col("Code") == "S08").then(None).otherwise(pl.col("f_cnt")).alias("f_cnt")
                            ).write_parquet(src)  # every feature has a missing cell
    with pytest.raises(DataError, match=r"would drop all \d+ feature columns.*raise --max-nan-ratio"):
        filter_dataset(src, tmp_path / "out.parquet", 0.0, _cfg())
    every_day = _panel().with_columns(pl.when(pl.col("Code") < "S12").then(None).otherwise(pl.col("feat_ret_1d"))
                                      .alias("feat_ret_1d"))
    every_day.write_parquet(src)
    with pytest.raises(DataError, match=r"would drop all \d+ dates"):
        filter_dataset(src, tmp_path / "out.parquet", 0.3, _cfg())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]  # nothing half-written
