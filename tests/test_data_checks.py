"""Dataset checks: every check passes on a clean panel and fails, naming the cause, on a planted fault."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft.cli import main
from atft.config import Config
from atft.errors import DataError
from atft.health.data import (
    CHECKS,
    check_target_date_nan_ratio,
    check_target_nan_ratio,
    feature_columns,
    legit_tail,
    run_checks,
)
from atft.health.result import CheckResult

N_STOCKS, N_DATES = 25, 30
DATES = [dt.date(2023, 1, 2) + dt.timedelta(days=i) for i in range(N_DATES)]


def _cfg() -> Config:
    cfg = Config()
    cfg.data.horizons = [1, 5]
    return cfg


def clean_panel(seed: int = 0) -> pl.DataFrame:
    """25 stocks x 30 dates: random-walk targets (null in each stock's last h rows), 4 features."""
    rng = np.random.default_rng(seed)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (N_STOCKS, N_DATES)), axis=1))  # [N, D]
    cols: dict[str, object] = {
        "Code": np.repeat([f"S{i:02d}" for i in range(N_STOCKS)], N_DATES),
        "Date": DATES * N_STOCKS,
        "sector": np.repeat(rng.integers(0, 3, N_STOCKS), N_DATES),
    }
    for k in range(3):
        cols[f"f{k}"] = rng.normal(0, 1, N_STOCKS * N_DATES).astype(np.float32)
    cols["f_cnt"] = rng.integers(0, 100, N_STOCKS * N_DATES)
    for h in (1, 5):
        fwd = np.full((N_STOCKS, N_DATES), np.nan)
        fwd[:, :-h] = price[:, h:] / price[:, :-h] - 1
        cols[f"feat_ret_{h}d"] = fwd.ravel()
    df = pl.DataFrame(cols)
    return df.with_columns(pl.col("feat_ret_1d", "feat_ret_5d").fill_nan(None))  # tail = null


def _stock(i: int) -> pl.Expr:
    return pl.col("Code") == f"S{i:02d}"


def _date(j: int) -> pl.Expr:
    return pl.col("Date") == DATES[j]


def _nan_in_target(df: pl.DataFrame) -> pl.DataFrame:  # float NaN (not null) in 20% of the rows
    return df.with_columns(pl.when(pl.col("Code") < "S05").then(float("nan"))
                           .otherwise(pl.col("feat_ret_1d")).alias("feat_ret_1d"))


def _missing_date(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.when(_date(10)).then(None).otherwise(pl.col("feat_ret_1d")).alias("feat_ret_1d"))


def _cs_constant(df: pl.DataFrame) -> pl.DataFrame:  # f1 equal across stocks on 18 of 30 dates
    return df.with_columns(pl.when(pl.col("Date") < DATES[18]).then(pl.col("Date").dt.day().cast(pl.Float32))
                           .otherwise(pl.col("f1")).alias("f1"))


def _leak(df: pl.DataFrame) -> pl.DataFrame:
    noise = np.random.default_rng(1).normal(0, 1e-4, df.height)
    return df.with_columns((pl.col("feat_ret_5d") + pl.Series(noise)).alias("f_leak"))


def _few_stocks(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(~(_date(3) & (pl.col("Code") >= "S15")))


# check name -> (plant the fault, text the failing result names, extra figure assertion)
FAULTS: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], str]] = {
    "feature_columns": (lambda d: d.with_columns(fwd_ret_5=pl.col("feat_ret_5d")), "fwd_ret_5"),
    "target_columns": (lambda d: d.rename({"feat_ret_1d": "horizon_1", "feat_ret_5d": "horizon_5"}),
                       "data.target_template='horizon_{h}'"),
    "target_nan_ratio": (_nan_in_target, "feat_ret_1d"),
    "target_date_nan_ratio": (_missing_date, "2023-01-12"),
    "feature_nan_ratio": (lambda d: d.with_columns(pl.when(pl.col("Code") < "S05").then(float("nan"))
                                                   .otherwise(pl.col("f2")).alias("f2")), "f2"),
    "feature_date_nan_ratio": (lambda d: d.with_columns(pl.when(_date(7)).then(None).otherwise(pl.col("f0"))
                                                        .alias("f0")), "f0@2023-01-09"),
    "infinite_values": (lambda d: d.with_columns(pl.when(_stock(3) & _date(4)).then(float("inf"))
                                                 .otherwise(pl.col("f2")).alias("f2")), "f2"),
    "duplicate_rows": (lambda d: pl.concat([d, d.filter(_stock(2) & _date(5))]), "S02"),
    "min_stocks_per_date": (_few_stocks, "2023-01-05: 15"),
    "constant_feature": (lambda d: d.with_columns(f0=pl.lit(0.0, pl.Float32)), "f0"),
    "cs_constant_feature": (_cs_constant, "f1"),
    "leakage": (_leak, "f_leak~feat_ret_5d"),
    "return_bound_1d": (lambda d: d.with_columns(pl.when(_stock(4) & _date(6)).then(5.0)
                                                 .otherwise(pl.col("feat_ret_1d")).alias("feat_ret_1d")), "S04"),
}


def _text(results: list[CheckResult]) -> str:
    return " ".join(f"{r.name} {r.message} {r.examples}" for r in results if not r.passed)


def test_every_registered_check_has_a_planted_fault() -> None:
    assert set(FAULTS) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_check_passes_clean_and_fails_on_planted_fault(name: str) -> None:
    cfg, clean = _cfg(), clean_panel()
    plant, cause = FAULTS[name]
    ok = CHECKS[name](clean.lazy(), cfg)
    assert ok and all(r.passed for r in ok), [str(r) for r in ok if not r.passed]
    bad = CHECKS[name](plant(clean).lazy(), cfg)
    failed = [r for r in bad if not r.passed]
    assert failed, [str(r) for r in bad]
    assert cause in _text(failed)
    assert all("Fix:" in r.message for r in failed)


def test_target_nan_counts_float_nan_and_excludes_tail() -> None:
    cfg, clean = _cfg(), clean_panel()
    assert clean["feat_ret_1d"].null_count() == N_STOCKS  # the legitimate tail ...
    assert [r.figure for r in check_target_nan_ratio(clean.lazy(), cfg)] == [0.0, 0.0]  # ... is excluded
    planted = _nan_in_target(clean)
    assert planted["feat_ret_1d"].null_count() == N_STOCKS - 5  # null_count misses the NaN
    r1, r5 = check_target_nan_ratio(planted.lazy(), cfg)
    assert r1.figure == pytest.approx(5 * 29 / (25 * 29)) and not r1.passed  # 0.2
    assert r5.passed


def test_whole_missing_date_fails_per_date_but_not_globally() -> None:
    cfg, df = _cfg(), _missing_date(clean_panel())
    glob = check_target_nan_ratio(df.lazy(), cfg)[0]
    per_date = check_target_date_nan_ratio(df.lazy(), cfg)[0]
    assert glob.passed and glob.figure == pytest.approx(25 / (25 * 29))
    assert not per_date.passed and per_date.figure == 1.0
    assert per_date.examples == ["2023-01-12: 1"]


def test_legit_tail_is_last_h_rows_per_stock() -> None:
    df = pl.DataFrame({"Code": ["a", "a", "a", "b", "b"],
                       "Date": [dt.date(2024, 1, d) for d in (1, 2, 3, 2, 3)]})
    got = df.select(legit_tail(2).alias("t"))["t"].to_list()
    assert got == [False, True, True, True, True]


def test_feature_columns_selection() -> None:
    cfg, df = _cfg(), clean_panel().with_columns(feat_ret_20d=pl.lit(0.0), junk=pl.lit(1.0))
    cfg.data.exclude = ["junk"]
    assert feature_columns(df.schema, cfg) == ["f0", "f1", "f2", "f_cnt"]
    cfg.data.features = ["f0", "nope"]
    with pytest.raises(DataError, match=r"explicit features \['nope'\] are not in the data.*Fix:"):
        feature_columns(df.schema, cfg)
    cfg.data.features = ["f0", "feat_ret_5d"]
    with pytest.raises(DataError, match=r"\['feat_ret_5d'\] are targets"):
        feature_columns(df.schema, cfg)
    cfg.data.features = []
    with pytest.raises(DataError, match=r"\['label_5d'\] look like forward returns.*data.exclude"):
        feature_columns(df.with_columns(label_5d=pl.lit(0.0)).schema, cfg)


def test_run_checks_clean_all_pass_and_skips_feature_checks_on_bad_selection() -> None:
    cfg = _cfg()
    results = run_checks(clean_panel(), cfg)
    assert all(r.passed for r in results), [str(r) for r in results if not r.passed]
    assert {r.name.split("[")[0] for r in results} == set(CHECKS)
    bad = run_checks(clean_panel().with_columns(fwd_5d=pl.lit(1.0)), cfg)
    names = {r.name.split("[")[0] for r in bad}
    assert "leakage" not in names and "feature_columns" in names and "target_nan_ratio" in names


def test_cli_check_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean_panel().write_parquet(tmp_path / "ok.parquet")
    _leak(clean_panel()).write_parquet(tmp_path / "bad.parquet")
    out = tmp_path / "r.json"
    assert main(["check-data", str(tmp_path / "ok.parquet"), "data.horizons=[1,5]", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["passed"] is True
    assert main(["check-data", str(tmp_path / "bad.parquet"), "data.horizons=[1,5]"]) == 1
    assert "FAIL leakage[feat_ret_5d]" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "missing.parquet")]) == 2


def test_leakage_medians_match_the_polars_group_by_corr() -> None:
    """The moment-matmul leakage figures equal per-date ``pl.corr`` medians of the float32 values
    (NaN, null, constant date, a date with 2 rows, an int feature, shuffled rows)."""
    from atft.health.data import MIN_CORR_PAIRS, leakage_medians

    rng = np.random.default_rng(0)
    df = clean_panel().with_columns(
        f_near=pl.col("feat_ret_5d") * 3 + 100 + pl.Series(rng.normal(0, 0.001, N_STOCKS * N_DATES)),
        f_cdate=pl.when(_date(5)).then(7.0).otherwise(pl.col("f0")),
        f1=pl.when(pl.Series(rng.random(N_STOCKS * N_DATES) < 0.2)).then(float("nan")).otherwise(pl.col("f1")),
    ).filter(~(_date(9) & (pl.col("Code") > "S01"))).sample(fraction=1.0, shuffle=True, seed=1)
    feats, targets = ["f0", "f1", "f2", "f_cnt", "f_near", "f_cdate"], ["feat_ret_1d", "feat_ret_5d"]

    def corr(f: str, t: str) -> pl.Expr:
        x = pl.col(f).cast(pl.Float32).cast(pl.Float64).fill_nan(None)
        y = pl.col(t).cast(pl.Float32).cast(pl.Float64).fill_nan(None)
        n = (x.is_not_null() & y.is_not_null()).sum()
        return pl.when(n >= MIN_CORR_PAIRS).then(pl.corr(x, y).fill_nan(None)).alias(f"{f}|{t}")

    ref = (df.lazy().group_by("Date").agg([corr(f, t) for f in feats for t in targets])
           .select([pl.col(f"{f}|{t}").abs().median() for f in feats for t in targets]).collect().row(0))
    got = leakage_medians(df.lazy(), "Date", feats, targets)  # [F, t]
    np.testing.assert_allclose(got.ravel(), np.array(ref, dtype=float), rtol=0, atol=1e-12)
    assert got[feats.index("f_near"), 1] > 0.99
