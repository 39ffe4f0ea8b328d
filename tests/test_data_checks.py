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
from atft.health.dataset_checks import (
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
    from atft.data.stats import MIN_CORR_PAIRS, leakage_medians

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


# ----------------------------------------------------------------------------- the one streaming pass
# The checks read per-date sums of one streaming pass (atft.health.scan._scan). These tests hold
# them to the plain polars group_by definitions on irregular data, for every batch layout the pass
# has ("slot": (Code, Date)-sorted runs, "date": Date-sorted runs, "gather": anything else), for
# batches down to a few rows (sums merged across batches) and for chunked missing-cell corrections.


def _polars_date_stats(df: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """``date_stats`` by definition: one polars group_by per date (the pre-streaming implementation)."""
    from atft.data.schema import missing
    from atft.data.schema import selection_problems as _selection_problems

    schema, d = df.schema, cfg.data
    feats = [f for f in _selection_problems(schema, cfg)[0] if f in schema and schema[f].is_numeric()]
    agg = [pl.len().alias("len")]
    for f in feats:
        x = pl.col(f).fill_nan(None)
        agg += [missing(f, schema[f]).sum().alias(f"m:{f}"), x.count().alias(f"k:{f}"),
                x.min().alias(f"lo:{f}"), x.max().alias(f"hi:{f}")]
    agg += [pl.col(c).is_infinite().sum().alias(f"i:{c}") for c, t in schema.items() if t.is_float()]
    agg.append(pl.col(d.code_col).n_unique().alias("stocks"))
    return df.group_by(d.date_col).agg(agg).sort(d.date_col)


def _polars_leak_medians(df: pl.DataFrame, feats: list[str], targets: list[str], date: str = "Date") -> np.ndarray:
    """Median over dates of |pl.corr| of the float32 values (pairwise complete, >= MIN_CORR_PAIRS).

    Each column is first shifted by its date minimum (exact in float64): ``pl.corr`` in a lazy
    group_by loses ~1e-10 on a column whose |mean| / std is 1e7 (``f_far``).
    """
    from atft.data.stats import MIN_CORR_PAIRS

    def value(c: str) -> pl.Expr:
        v = pl.col(c).cast(pl.Float32).cast(pl.Float64).fill_nan(None)
        return v - v.min().over(date)

    def corr(f: str, t: str) -> pl.Expr:
        x, y = value(f), value(t)
        n = (x.is_not_null() & y.is_not_null()).sum()
        return pl.when(n >= MIN_CORR_PAIRS).then(pl.corr(x, y).fill_nan(None)).alias(f"{f}|{t}")

    row = (df.lazy().group_by(date).agg([corr(f, t) for f in feats for t in targets])
           .select([pl.col(f"{f}|{t}").abs().median() for f in feats for t in targets]).collect().row(0))
    return np.array(row, dtype=float).reshape(len(feats), len(targets))


def messy_panel(seed: int = 0) -> pl.DataFrame:
    """``clean_panel`` made irregular: S03 listed late, S04 delisted early, 2 stocks on one date,
    NaN and null in features and targets, +-inf, an int feature with nulls and values above 2^40,
    a float64 feature far from 0, an excluded float column, a null date and a null code."""
    rng = np.random.default_rng(seed)
    df = clean_panel(seed)
    n = df.height
    df = df.with_columns(
        f_int=pl.Series(rng.integers(0, 1000, n) + 2**40).scatter([3, 40, 41], None),
        f_far=pl.Series(1e4 + rng.normal(0, 1e-3, n)),  # float64, |mean| / std = 1e7
        junk=pl.Series(rng.normal(0, 1, n)).scatter([7], float("inf")),
        f1=pl.when(pl.Series(rng.random(n) < 0.15)).then(float("nan")).otherwise(pl.col("f1")),
        f0=pl.when(pl.Series(rng.random(n) < 0.05)).then(None).otherwise(pl.col("f0")),
        feat_ret_1d=pl.when(pl.Series(rng.random(n) < 0.1)).then(float("nan")).otherwise(pl.col("feat_ret_1d")),
    ).with_columns(f2=pl.when(_stock(6) & _date(12)).then(float("-inf")).otherwise(pl.col("f2")))
    df = df.filter(~((pl.col("Code") == "S03") & (pl.col("Date") < DATES[8]))
                   & ~((pl.col("Code") == "S04") & (pl.col("Date") > DATES[20]))
                   & ~(_date(9) & (pl.col("Code") > "S01")))
    odd = df.head(2).with_columns(Date=pl.Series([None, DATES[3]], dtype=pl.Date),
                                  Code=pl.Series(["S00", None], dtype=pl.String))
    return pl.concat([df, odd])


def _messy_cfg() -> Config:
    cfg = _cfg()
    cfg.data.exclude = ["junk"]
    return cfg


ORDERS: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
    "code-sorted": lambda d: d.sort("Code", "Date", nulls_last=True),
    "date-sorted": lambda d: d.sort("Date", "Code", nulls_last=True),
    "shuffled": lambda d: d.sample(fraction=1.0, shuffle=True, seed=3),
}


@pytest.fixture
def grid_kinds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the batch layout (``_grid`` kind) of every batch of the passes in a test."""
    from atft.data import stats as scan

    kinds: list[str] = []
    grid = scan._grid

    def spy(loc: np.ndarray, n: int) -> tuple[str, np.ndarray, int, np.ndarray | None, np.ndarray | None]:
        out = grid(loc, n)
        kinds.append(out[0])
        return out

    monkeypatch.setattr(scan, "_grid", spy)
    return kinds


@pytest.mark.parametrize("batch_rows", [None, 61])
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_one_pass_date_stats_equal_the_polars_group_by(order: str, batch_rows: int | None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from polars.testing import assert_frame_equal

    from atft.data import stats as scan
    from atft.health import dataset_checks as data

    monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", batch_rows)
    cfg, df = _messy_cfg(), ORDERS[order](messy_panel())
    got = data.date_stats(df.lazy(), cfg)
    assert_frame_equal(got, _polars_date_stats(df, cfg).select(got.columns))
    assert got["lo:f_int"].dtype == pl.Int64 and got["lo:f_far"].dtype == pl.Float64  # exact, own dtype


@pytest.mark.parametrize("date_dtype", [pl.String, pl.Datetime("ms")])
def test_one_pass_date_stats_other_date_dtypes(date_dtype: pl.DataType) -> None:
    from polars.testing import assert_frame_equal

    from atft.health.dataset_checks import date_stats

    cfg = _messy_cfg()
    df = messy_panel().with_columns(pl.col("Date").cast(date_dtype))
    got = date_stats(df.lazy(), cfg)
    assert_frame_equal(got, _polars_date_stats(df, cfg).select(got.columns))


@pytest.mark.parametrize("batch_rows", [None, 45])
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_one_pass_target_stats_equal_the_legit_tail_group_by(order: str, batch_rows: int | None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from polars.testing import assert_frame_equal

    from atft.data import stats as scan
    from atft.health import dataset_checks as data

    monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", batch_rows)
    cfg, df = _messy_cfg(), ORDERS[order](messy_panel())
    targets, got = data._compute_target_date_stats(df.lazy(), cfg)
    ref_targets, ref = data._polars_target_date_stats(df.lazy(), cfg)
    assert targets == ref_targets == ["feat_ret_1d", "feat_ret_5d"]
    assert_frame_equal(got, ref.select(got.columns), check_dtypes=False)


def test_duplicate_rows_fall_back_to_the_ordinal_rank() -> None:
    """With duplicate (Code, Date) rows "the last h rows" depend on the row order: polars decides."""
    from atft.health import dataset_checks as data

    cfg = _cfg()
    df = pl.concat([clean_panel(), clean_panel().filter(_stock(2) & _date(N_DATES - 1))])
    assert data._scan_stats(df.lazy(), cfg, "targets").target_miss is None
    assert data._compute_target_date_stats(df.lazy(), cfg)[1].equals(data._polars_target_date_stats(df.lazy(), cfg)[1])


@pytest.mark.parametrize("cells", [2**20, 5])  # 5: the missing-cell corrections in many small steps
@pytest.mark.parametrize("batch_rows", [None, 50, 37])  # 50 rows = 2 dates of 25 stocks
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_leakage_medians_across_batches_and_layouts(order: str, batch_rows: int | None, cells: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from atft.data import stats as scan

    monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", batch_rows)
    monkeypatch.setattr(scan, "SCAN_CELLS", cells)
    rng = np.random.default_rng(2)
    df = ORDERS[order](messy_panel().with_columns(
        f_near=pl.col("feat_ret_5d") * 3 + 100 + pl.Series(rng.normal(0, 0.001, messy_panel().height))))
    feats, targets = ["f0", "f1", "f_cnt", "f_far", "f_near"], ["feat_ret_1d", "feat_ret_5d"]
    got = scan.leakage_medians(df.lazy(), "Date", feats, targets)
    np.testing.assert_allclose(got, _polars_leak_medians(df, feats, targets), rtol=0, atol=1e-12)
    assert got[feats.index("f_near"), 1] > 0.99


def test_leakage_batch_layouts_are_all_exercised(monkeypatch: pytest.MonkeyPatch, grid_kinds: list[str]) -> None:
    """Regular panels take the no-copy layouts; ragged or shuffled batches are gathered; same figures."""
    from atft.data import stats as scan

    feats, targets = ["f0", "f1", "f2"], ["feat_ret_1d", "feat_ret_5d"]
    ref = _polars_leak_medians(clean_panel(), feats, targets)
    for order, rows in (("code-sorted", 60), ("date-sorted", 50), ("shuffled", 64)):
        monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", rows)
        got = scan.leakage_medians(ORDERS[order](clean_panel()).lazy(), "Date", feats, targets)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert {"slot", "date", "gather"} <= set(grid_kinds)


def test_leakage_skips_a_date_with_inf() -> None:
    """+-inf in a column on a date: no correlation of that column on that date (the others stay)."""
    from atft.data.stats import leakage_medians

    df = clean_panel()
    planted = df.with_columns(f0=pl.when(_stock(3) & _date(4)).then(float("inf")).otherwise(pl.col("f0")))
    ref = df.with_columns(f0=pl.when(_date(4)).then(None).otherwise(pl.col("f0")))
    feats, targets = ["f0", "f1"], ["feat_ret_1d", "feat_ret_5d"]
    np.testing.assert_allclose(leakage_medians(planted.lazy(), "Date", feats, targets),
                               _polars_leak_medians(ref, feats, targets), rtol=0, atol=1e-12)


def test_pairwise_date_corr_matches_pl_corr() -> None:
    from atft.data.stats import pairwise_date_corr

    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (6, 20, 3)).astype(np.float32)
    y = (x[..., :2] * 0.5 + rng.normal(0, 1, (6, 20, 2))).astype(np.float32)
    x[:4][rng.random(x[:4].shape) < 0.2] = np.nan
    x[2, :, 1] = 7.0  # constant on one date
    y[4, 3:, 0] = np.nan  # 3 pairs on one date
    y[5, 2:, 1] = np.nan  # 2 pairs: no correlation
    got = pairwise_date_corr(x, y)  # [G, c, t]
    long = pl.DataFrame({"g": np.repeat(np.arange(6), 20), **{f"x{i}": x[..., i].ravel() for i in range(3)},
                         **{f"y{j}": y[..., j].ravel() for j in range(2)}})
    ref = np.array([[[_pl_corr(long.filter(pl.col("g") == g), f"x{i}", f"y{j}") for j in range(2)] for i in range(3)]
                    for g in range(6)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.isnan(got[2, 1]).all() and np.isnan(got[5, :, 1]).all() and not np.isnan(got[4, :, 0]).any()


def _pl_corr(df: pl.DataFrame, x: str, y: str) -> float:
    from atft.data.stats import MIN_CORR_PAIRS

    d = df.select(pl.col(x).cast(pl.Float64).fill_nan(None), pl.col(y).cast(pl.Float64).fill_nan(None)).drop_nulls()
    if d.height < MIN_CORR_PAIRS:
        return float("nan")
    r = d.select(pl.corr(x, y)).item()
    return float("nan") if r is None else float(r)


def test_run_checks_on_an_empty_frame_measures_nothing() -> None:
    cfg = _cfg()
    results = run_checks(clean_panel().head(0), cfg)
    assert {r.name.split("[")[0] for r in results} == set(CHECKS)
    assert not any(r.passed for r in results if r.name.startswith(("target_nan_ratio", "leakage")))


@pytest.mark.parametrize("cut", [5 * N_DATES, 5 * N_DATES + 7])  # chunks of whole stocks; a chunk ending mid-stock
def test_one_pass_reads_chunked_batches(cut: int, monkeypatch: pytest.MonkeyPatch, grid_kinds: list[str]) -> None:
    from polars.testing import assert_frame_equal

    from atft.data import stats as scan
    from atft.health import dataset_checks as data

    monkeypatch.setattr(scan, "SCAN_BATCH_ROWS", 10 * N_DATES)  # 10 whole stocks per batch
    cfg, df = _cfg(), clean_panel()
    chunked = pl.concat([df[:cut], df[cut:]], rechunk=False)
    assert chunked.n_chunks() == 2
    got = data.date_stats(chunked.lazy(), cfg)
    assert_frame_equal(got, _polars_date_stats(df, cfg).select(got.columns))
    feats, targets = ["f0", "f1", "f2"], ["feat_ret_1d", "feat_ret_5d"]
    np.testing.assert_allclose(scan.leakage_medians(chunked.lazy(), "Date", feats, targets),
                               _polars_leak_medians(df, feats, targets), rtol=0, atol=1e-12)
    assert set(grid_kinds) == {"slot"}


def test_a_parquet_file_is_read_in_whole_row_groups(tmp_path: Path) -> None:
    """From a path, batches are whole row groups (polars decodes a whole group for any slice of it)."""
    from atft.data import stats as scan
    from atft.health import dataset_checks as data

    cfg, df = _messy_cfg(), messy_panel()
    df.write_parquet(tmp_path / "p.parquet", row_group_size=100)
    lf = data.as_lazy(tmp_path / "p.parquet", cfg)
    q = lf.select("Date")
    ranges = scan._ranges(lf, q, 250)  # 250 rows wanted: two row groups of 100 per batch
    assert ranges[0] == (0, 200) and sum(n for _, n in ranges) == df.height
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False))
    from_file = run_checks(tmp_path / "p.parquet", cfg)
    from_frame = run_checks(df, cfg)
    assert [(r.name, r.figure, r.passed) for r in from_file] == [(r.name, r.figure, r.passed) for r in from_frame]
