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
from tests.stats_reference import (
    polars_date_stats,
    polars_leak_medians,
    polars_stock_counts,
    polars_tail_counts,
)

N_STOCKS, N_DATES = 25, 30
DATES = [dt.date(2023, 1, 2) + dt.timedelta(days=i) for i in range(N_DATES)]


def _cfg() -> Config:
    """Horizons 1 and 5, and a warm-up short enough that the 30-date panel can be split (a warm-up
    of max(sequence_length - 1, graph.min_obs) = 10, val/test 3 dates each, embargo 5 before each)."""
    cfg = Config()
    cfg.data.horizons = [1, 5]
    cfg.data.sequence_length, cfg.graph.min_obs = 5, 10
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
    "dataset_size": (lambda d: d.filter(pl.col("Date") <= DATES[9]), "too short: 10 dates"),
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
    short = ["data.horizons=[1,5]", "graph.min_obs=10"]  # _cfg()'s warm-up: the 30-date panel splits
    assert main(["check-data", str(tmp_path / "ok.parquet"), *short, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["passed"] is True
    assert main(["check-data", str(tmp_path / "bad.parquet"), *short]) == 1
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


# ----------------------------------------------------------------------------- the statistics
# The checks read one DatasetStats (atft.data.stats.build_stats: one pass, per-date sums). These
# tests hold it to the plain polars group_by definitions (tests/stats_reference.py) on irregular
# data, for every row order (the batch layouts "slot": (Code, Date)-sorted runs, "date":
# Date-sorted runs, "gather": anything else), for batches down to a few rows (sums merged across
# batches), for chunked frames and for a parquet file read by row groups.


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


@pytest.mark.parametrize(("batch_rows", "grid_bytes"), [(None, 2**23), (61, 2**23), (None, 1)])  # 1: a date per chunk
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_one_pass_date_stats_equal_the_polars_group_by(order: str, batch_rows: int | None, grid_bytes: int) -> None:
    from polars.testing import assert_frame_equal

    from atft.data.stats import build_stats
    from atft.health import dataset_checks as data

    cfg, df = _messy_cfg(), ORDERS[order](messy_panel())
    got = data.date_stats(build_stats(df.lazy(), cfg, {"rows"}, batch_rows=batch_rows, grid_bytes=grid_bytes,
                                      workers=2), cfg)
    assert_frame_equal(got, polars_date_stats(df, cfg).select(got.columns))
    assert got["lo:f_int"].dtype == pl.Int64 and got["lo:f_far"].dtype == pl.Float64  # exact, own dtype
    assert got.columns == data.date_stats(df.lazy(), cfg).columns  # a check alone measures the same


@pytest.mark.parametrize("date_dtype", [pl.String, pl.Datetime("ms")])
def test_one_pass_date_stats_other_date_dtypes(date_dtype: pl.DataType) -> None:
    from polars.testing import assert_frame_equal

    from atft.health.dataset_checks import date_stats

    cfg = _messy_cfg()
    df = messy_panel().with_columns(pl.col("Date").cast(date_dtype))
    got = date_stats(df.lazy(), cfg)
    assert_frame_equal(got, polars_date_stats(df, cfg).select(got.columns))


@pytest.mark.parametrize(("batch_rows", "grid_bytes"), [(None, 2**23), (45, 2**23), (None, 1)])
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_one_pass_target_stats_equal_the_legit_tail_group_by(order: str, batch_rows: int | None,
                                                             grid_bytes: int) -> None:
    from polars.testing import assert_frame_equal

    from atft.data.stats import build_stats

    cfg, df = _messy_cfg(), ORDERS[order](messy_panel())
    s = build_stats(df.lazy(), cfg, {"targets"}, batch_rows=batch_rows, grid_bytes=grid_bytes, workers=2)
    assert s.targets == ("feat_ret_1d", "feat_ret_5d")
    got = s.per_date.select("Date", *(f"{k}:{t}" for t in s.targets for k in ("tm", "te")))
    assert_frame_equal(got, polars_tail_counts(df, cfg).select(got.columns), check_dtypes=False)


def test_duplicate_rows_fall_back_to_the_ordinal_rank() -> None:
    """With duplicate (Code, Date) rows "the last h rows" depend on the row order: polars decides."""
    from polars.testing import assert_frame_equal

    from atft.data.stats import build_stats

    cfg = _cfg()
    df = pl.concat([clean_panel(), clean_panel().filter(_stock(2) & _date(N_DATES - 1))])
    s = build_stats(df, cfg)
    got = s.per_date.select("Date", *(f"{k}:{t}" for t in s.targets for k in ("tm", "te")))
    assert_frame_equal(got, polars_tail_counts(df, cfg).select(got.columns), check_dtypes=False)
    assert s.duplicate_examples == (("S02", DATES[N_DATES - 1], 2),)


@pytest.mark.parametrize(("chunk_bytes", "grid_bytes"), [(2**22, 2**23), (1, 2**23), (2**22, 1)])  # 1: a date at a time
@pytest.mark.parametrize("batch_rows", [None, 50, 37])  # 50 rows = 2 dates of 25 stocks
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_leakage_medians_across_batches_and_layouts(order: str, batch_rows: int | None, chunk_bytes: int,
                                                    grid_bytes: int) -> None:
    from atft.data.stats import leakage_medians

    rng = np.random.default_rng(2)
    df = ORDERS[order](messy_panel().with_columns(
        f_near=pl.col("feat_ret_5d") * 3 + 100 + pl.Series(rng.normal(0, 0.001, messy_panel().height))))
    feats, targets = ["f0", "f1", "f_cnt", "f_far", "f_near"], ["feat_ret_1d", "feat_ret_5d"]
    got = leakage_medians(df.lazy(), "Date", feats, targets, batch_rows=batch_rows, chunk_bytes=chunk_bytes,
                          grid_bytes=grid_bytes, workers=2)
    np.testing.assert_allclose(got, polars_leak_medians(df, feats, targets), rtol=0, atol=1e-12)
    assert got[feats.index("f_near"), 1] > 0.99


def test_batch_layouts_of_the_row_orders() -> None:
    """Regular panels are views ("slot", "date"); ragged or shuffled batches are gathered; the
    grid holds each row on its date."""
    from atft.data.batches import layout_of

    df = clean_panel()
    for order, kind in (("code-sorted", "slot"), ("date-sorted", "date"), ("shuffled", "gather")):
        d = ORDERS[order](df)
        loc = d["Date"].rank("dense").cast(pl.Int64).to_numpy() - 1
        lay = layout_of(loc, N_DATES)
        assert lay.kind == kind
        grid = lay.grid(np.arange(d.height, dtype=np.float32))  # [D, S]: row numbers
        assert grid.shape == (N_DATES, N_STOCKS)
        assert (loc[grid.astype(np.int64)] == lay.dates[:, None]).all()
        cells = np.array([3, 100, 401])  # flat grid positions d * S + s -> batch rows
        assert lay.rows(cells).tolist() == grid.ravel()[cells].astype(int).tolist()
        assert lay.rows(cells[1:] - 2 * N_STOCKS, 2).tolist() == grid[2:].ravel()[cells[1:] - 2 * N_STOCKS].astype(int).tolist()
    ragged = layout_of(np.array([0, 1, 1, 2, 2, 2]), 3)
    assert ragged.kind == "gather" and ragged.slots == 3 and int(ragged.pad.sum()) == 3


def test_leakage_skips_a_date_with_inf() -> None:
    """+-inf in a column on a date: no correlation of that column on that date (the others stay)."""
    from atft.data.stats import leakage_medians

    df = clean_panel()
    planted = df.with_columns(f0=pl.when(_stock(3) & _date(4)).then(float("inf")).otherwise(pl.col("f0")))
    ref = df.with_columns(f0=pl.when(_date(4)).then(None).otherwise(pl.col("f0")))
    feats, targets = ["f0", "f1"], ["feat_ret_1d", "feat_ret_5d"]
    np.testing.assert_allclose(leakage_medians(planted.lazy(), "Date", feats, targets),
                               polars_leak_medians(ref, feats, targets), rtol=0, atol=1e-12)


def test_leakage_degenerate_dates_match_pl_corr() -> None:
    """A constant column on a date, a date with 3 pairs, one with 2 (no correlation), NaN cells."""
    from atft.data.moments import pearson
    from atft.data.stats import leakage_medians

    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (6, 20, 3)).astype(np.float32)
    y = (x[..., :2] * 0.5 + rng.normal(0, 1, (6, 20, 2))).astype(np.float32)
    x[:4][rng.random(x[:4].shape) < 0.2] = np.nan
    x[2, :, 1] = 7.0  # constant on one date
    y[4, 3:, 0] = np.nan  # 3 pairs on one date
    y[5, 2:, 1] = np.nan  # 2 pairs: no correlation
    long = pl.DataFrame({"g": np.repeat(np.arange(6), 20), **{f"x{i}": x[..., i].ravel() for i in range(3)},
                         **{f"y{j}": y[..., j].ravel() for j in range(2)}})
    feats, targets = ["x0", "x1", "x2"], ["y0", "y1"]
    for rows in (None, 7):
        got = leakage_medians(long.sample(fraction=1.0, shuffle=True, seed=5), "g", feats, targets, batch_rows=rows)
        np.testing.assert_allclose(got, polars_leak_medians(long, feats, targets, "g"), rtol=0, atol=1e-12)
    one = np.ones(1)
    assert np.isnan(pearson(2 * one, one, one, 2 * one, 2 * one, one)).all()  # 2 pairs: none
    assert np.isnan(pearson(5 * one, 5 * one, one, 5 * one, one, one)).all()  # zero variance: none


def test_run_checks_on_an_empty_frame_measures_nothing() -> None:
    """An empty frame measures nothing: one dataset_size FAIL and the schema-only checks (the
    issue named the former wall of NaN-figure FAIL rows, one per check, a bug)."""
    cfg = _cfg()
    results = run_checks(clean_panel().head(0), cfg)
    assert {r.name.split("[")[0] for r in results} == {"dataset_size", "feature_columns", "target_columns"}
    assert not any(r.passed for r in results if r.name.startswith(("dataset_size", "target_nan_ratio", "leakage")))


@pytest.mark.parametrize("cut", [5 * N_DATES, 5 * N_DATES + 7])  # chunks of whole stocks; a chunk ending mid-stock
def test_one_pass_reads_chunked_batches(cut: int) -> None:
    from polars.testing import assert_frame_equal

    from atft.data.stats import build_stats, leakage_medians

    cfg, df = _cfg(), clean_panel()
    chunked = pl.concat([df[:cut], df[cut:]], rechunk=False)
    assert chunked.n_chunks() == 2
    got = build_stats(chunked.lazy(), cfg, {"rows"}, batch_rows=10 * N_DATES).row_stats()  # 10 whole stocks
    assert_frame_equal(got, polars_date_stats(df, cfg).select(got.columns))
    feats, targets = ["f0", "f1", "f2"], ["feat_ret_1d", "feat_ret_5d"]
    np.testing.assert_allclose(leakage_medians(chunked.lazy(), "Date", feats, targets, batch_rows=10 * N_DATES),
                               polars_leak_medians(df, feats, targets), rtol=0, atol=1e-12)


def test_a_parquet_file_is_read_in_whole_row_groups(tmp_path: Path) -> None:
    """From a path, batches are whole row groups (polars decodes a whole group for any slice of it)."""
    from atft.data.batches import batch_ranges, open_source

    cfg, df = _messy_cfg(), messy_panel()
    df.write_parquet(tmp_path / "p.parquet", row_group_size=100)
    src = open_source(tmp_path / "p.parquet", "Code", "Date")
    assert src.row_groups is not None and sum(src.row_groups) == df.height
    ranges = batch_ranges(src, src.lf.select(pl.col("Date").alias("_d")), 250)  # two row groups of 100 per batch
    assert ranges[0] == (0, 200) and sum(n for _, n in ranges) == df.height
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False))
    from_file = run_checks(tmp_path / "p.parquet", cfg)
    from_frame = run_checks(df, cfg)
    assert [(r.name, r.figure, r.passed) for r in from_file] == [(r.name, r.figure, r.passed) for r in from_frame]


def test_run_checks_measures_once_and_checks_read_the_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_checks_by_name builds the statistics once; every check then reads that object."""
    from atft.data import stats as stats_mod
    from atft.health import dataset_checks as data

    calls: list[object] = []
    build = stats_mod.build_stats

    def counted(*args: object, **kwargs: object) -> stats_mod.DatasetStats:
        calls.append(args[2] if len(args) > 2 else kwargs.get("parts"))
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(data, "build_stats", counted)
    by_name = data.run_checks_by_name(messy_panel(), _messy_cfg())
    assert len(calls) == 1 and set(by_name) == set(CHECKS)
    s = build(messy_panel(), _messy_cfg())
    assert [str(r) for r in data.run_checks(s, _messy_cfg())] == [str(r) for rs in by_name.values() for r in rs]
    with pytest.raises(ValueError, match="built without 'leak'"):
        data.check_leakage(build(messy_panel(), _messy_cfg(), {"rows"}), _messy_cfg())
    with pytest.raises(ValueError, match=r"unknown parts \['rowz'\]"):
        build(messy_panel(), _messy_cfg(), {"rowz"})


def test_per_stock_counts_equal_the_polars_group_by() -> None:
    """filter-data's per-stock counts: rows, missing feature cells, target counts outside the tail
    (ranked over all rows), on the dates not skipped; with and without duplicate rows."""
    from polars.testing import assert_frame_equal

    from atft.data.stats import build_stats

    cfg = _messy_cfg()
    for df in (messy_panel(), pl.concat([messy_panel(), messy_panel().filter(_stock(2) & _date(N_DATES - 3))])):
        for skip in ((), (DATES[10], DATES[N_DATES - 2])):
            got = build_stats(df, cfg, (), per_stock=True, skip_dates=skip, batch_rows=97).per_stock
            assert got is not None
            ref = polars_stock_counts(df, cfg, skip)
            got = got.filter(pl.col("len") > 0).sort("Code", nulls_last=False)
            assert_frame_equal(got.select(ref.columns), ref, check_dtypes=False)


# ----------------------------------------------------------------------------- degenerate data: one clear line


def test_an_empty_or_short_dataset_is_one_line_not_a_wall_of_nan(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    clean_panel().head(0).write_parquet(tmp_path / "empty.parquet")
    clean_panel().filter(pl.col("Date") <= DATES[9]).write_parquet(tmp_path / "short.parquet")
    for name, words in (("empty", "the dataset is empty (0 rows)"), ("short", "too short: 10 dates")):
        assert main(["check-data", str(tmp_path / f"{name}.parquet"), "data.horizons=[1,5]"]) == 1
        out = capsys.readouterr().out
        fails = [ln for ln in out.splitlines() if ln.startswith("FAIL ")]
        assert len(fails) == 1 and fails[0].startswith("FAIL dataset_size:") and words in fails[0], out
        assert "nan" not in out.split("\n\n")[0].lower().replace("nan_ratio", "")  # no NaN figure rows


def test_inf_is_not_also_a_constant_feature_and_duplicates_no_missing_target_day() -> None:
    cfg, df = _cfg(), clean_panel()
    inf = df.with_columns(f2=pl.when(_stock(3) & _date(4)).then(float("inf")).otherwise(pl.col("f2")))
    assert {r.name for r in run_checks(inf, cfg) if not r.passed} == {"infinite_values"}
    last = df.filter(_date(N_DATES - 1) & (pl.col("Code") <= "S04"))  # duplicates of stocks' last rows
    assert {r.name for r in run_checks(pl.concat([df, last]), cfg) if not r.passed} == {"duplicate_rows"}


def test_a_text_target_is_one_fail_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean_panel().with_columns(pl.col("feat_ret_1d").cast(pl.String)).write_parquet(tmp_path / "s.parquet")
    assert main(["check-data", str(tmp_path / "s.parquet"), "data.horizons=[1,5]"]) == 1
    out = capsys.readouterr().out
    fails = [ln for ln in out.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1 and "feat_ret_1d (String)" in fails[0] and "not numbers" in fails[0]
