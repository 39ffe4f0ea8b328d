"""Price ingestion (atft build-dataset): no look-ahead, exact targets, formats, errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atft.cli import main
from atft.config import Config
from atft.data.prices import LOOKBACK, build_dataset, build_features, read_prices
from atft.errors import DataError
from atft.horizons import Horizons, looks_like_target

LITERAL_CSV = """code,DATE,Close
A,2024-01-02,10
A,2024-01-03,12
A,2024-01-04,9
A,2024-01-05,18
B,2024-01-02,5
B,2024-01-03,5
B,2024-01-04,10
B,2024-01-05,20
"""


def _cfg(horizons: list[int]) -> Config:
    cfg = Config()
    cfg.data.horizons = horizons
    return cfg


def _prices(n_stocks: int = 6, n_days: int = 90, seed: int = 0) -> pl.DataFrame:
    """Long OHLCV panel; stock 1 lists 10 days late, stock 2 misses day 40 (a gap)."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(n_days)]
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_stocks, n_days)), axis=1))
    df = pl.DataFrame({
        "Code": np.repeat([f"C{i}" for i in range(n_stocks)], n_days),
        "Date": dates * n_stocks,
        "Close": close.ravel(),
        "Open": (close * (1 + rng.normal(0, 0.005, close.shape))).ravel(),
        "High": (close * 1.01).ravel(),
        "Low": (close * 0.99).ravel(),
        "Volume": rng.integers(100, 10_000, n_stocks * n_days).astype(np.float64),
    })
    late = (pl.col("Code") == "C1") & (pl.col("Date") < dates[10])
    gap = (pl.col("Code") == "C2") & (pl.col("Date") == dates[40])
    return df.filter(~late & ~gap)


def _build(lf: pl.LazyFrame, horizons: list[int], **kw: object) -> pl.DataFrame:
    return build_features(lf, Horizons(tuple(horizons)), **kw).collect()  # type: ignore[arg-type]


def test_targets_equal_forward_close_ratio(tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    src.write_text(LITERAL_CSV)
    out = tmp_path / "d.parquet"
    s = build_dataset(src, out, cfg=_cfg([1, 2]), drop_warmup=False)
    df = pl.read_parquet(out)
    assert (s.rows, s.stocks, s.dates) == (8, 2, 4)
    assert df.columns[:2] == ["Code", "Date"] and df.schema["Code"] == pl.String
    assert df.schema["Date"] == pl.Date and df.schema["feat_ret_1d"] == pl.Float32
    got = df.select("feat_ret_1d", "feat_ret_2d", "bk_chg_1").to_dict(as_series=False)
    assert got["feat_ret_1d"] == pytest.approx([0.2, -0.25, 1.0, None, 0.0, 1.0, 1.0, None])
    assert got["feat_ret_2d"] == pytest.approx([-0.1, 0.5, None, None, 1.0, 3.0, None, None])
    assert got["bk_chg_1"] == pytest.approx([None, 0.2, -0.25, 1.0, None, 0.0, 1.0, 1.0])


def test_feature_names_never_look_like_targets() -> None:
    df = _build(_prices().lazy(), [1, 5, 10, 20])
    feats = [c for c in df.columns if c.startswith("bk_")]
    assert len(feats) >= 25
    assert not [f for f in feats if looks_like_target(f)]
    assert all(df.schema[f] == pl.Float32 for f in feats)


@pytest.mark.parametrize("cut", [60, 61, 70, 75, 89])
def test_no_look_ahead(cut: int) -> None:
    prices = _prices()
    t = dt.date(2021, 1, 1) + dt.timedelta(days=cut)
    full = _build(prices.lazy(), [1, 5])
    trunc = _build(prices.lazy().filter(pl.col("Date") <= t), [1, 5])
    feats = [c for c in full.columns if c.startswith("bk_")]
    a = full.filter(pl.col("Date") <= t).select("Code", "Date", *feats)
    b = trunc.select("Code", "Date", *feats)
    assert a.height > 0
    assert_frame_equal(a, b)


def test_warmup_rows_dropped_and_start_keeps_history() -> None:
    prices = _prices()
    full = _build(prices.lazy(), [1])
    n_rows = prices.group_by("Code").len().sort("Code")["len"].to_list()
    assert full.group_by("Code").len().sort("Code")["len"].to_list() == [n - LOOKBACK for n in n_rows]
    assert full.select(pl.col("^bk_.*$").null_count()).sum_horizontal().item() == 0
    start = dt.date(2021, 3, 20)
    late = _build(prices.lazy(), [1], start=start)
    assert late["Date"].min() == start
    base = [c for c in full.columns if c.startswith("bk_") and "_cs" not in c]
    assert_frame_equal(full.filter(pl.col("Date") >= start).select("Code", "Date", *base),
                       late.select("Code", "Date", *base))


def test_long_and_wide_give_same_features(tmp_path: Path) -> None:
    prices = _prices().select("Code", "Date", "Close")
    prices.write_csv(tmp_path / "long.csv")
    prices.pivot(on="Code", index="Date", values="Close").sort("Date").write_csv(tmp_path / "wide.csv")
    cfg = _cfg([1, 5])
    build_dataset(tmp_path / "long.csv", tmp_path / "l.parquet", cfg=cfg)
    build_dataset(tmp_path / "wide.csv", tmp_path / "w.parquet", cfg=cfg)
    long_df, wide_df = pl.read_parquet(tmp_path / "l.parquet"), pl.read_parquet(tmp_path / "w.parquet")
    assert long_df.height == prices.height - 6 * LOOKBACK
    assert_frame_equal(long_df, wide_df)


def test_csv_parquet_and_sniffed_parquet_agree(tmp_path: Path) -> None:
    prices = _prices()
    prices.write_csv(tmp_path / "p.csv")
    prices.write_parquet(tmp_path / "p.parquet")
    prices.write_parquet(tmp_path / "p.dat")  # no known extension: detected by content
    outs = []
    for name in ("p.csv", "p.parquet", "p.dat"):
        build_dataset(tmp_path / name, tmp_path / f"{name}.out.parquet")
        outs.append(pl.read_parquet(tmp_path / f"{name}.out.parquet"))
    assert "bk_lvolume" in outs[0].columns and "bk_gap" in outs[0].columns
    assert_frame_equal(outs[0], outs[1], rel_tol=1e-6)
    assert_frame_equal(outs[1], outs[2])


def test_read_prices_case_insensitive_and_drops_missing_close(tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    src.write_text("CODE,date,close,volume\nA,2024-01-02,10,5\nA,2024-01-03,,6\nA,2024-01-04,11,7\n")
    lf, n_missing = read_prices(src)
    df = lf.collect()
    assert n_missing == 1
    assert df.columns == ["Code", "Date", "Close", "Volume"]
    assert df["Close"].to_list() == [10.0, 11.0]
    assert df["Date"].to_list() == [dt.date(2024, 1, 2), dt.date(2024, 1, 4)]


BAD_INPUTS = {
    "no_close": ("Code,Date,Price\nA,2024-01-02,1\n", "no Close column"),
    "no_date": ("Code,Day,Close\nA,2024-01-02,1\n", "no Date column"),
    "bad_date": ("Code,Date,Close\nA,2024-01-02,1\nA,02.01.2024x,2\n", "unparseable date"),
    "duplicate": ("Code,Date,Close\nA,2024-01-02,1\nA,2024-01-02,2\n", "duplicate (Code, Date)"),
    "non_numeric": ("Code,Date,Close\nA,2024-01-02,1\nA,2024-01-03,abc\n", "non-numeric"),
    "zero_price": ("Code,Date,Close\nA,2024-01-02,1\nA,2024-01-03,0\n", "non-positive price"),
    "negative_price": ("Date,A,B\n2024-01-02,1,-2\n", "non-positive price"),
    "wide_non_numeric": ("Date,A,B\n2024-01-02,1,x\n", "non-numeric"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_data_error_and_no_file(tmp_path: Path, case: str) -> None:
    text, expected = BAD_INPUTS[case]
    src = tmp_path / "p.csv"
    src.write_text(text)
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError, match="Fix:") as info:
        build_dataset(src, out, drop_warmup=False)
    assert expected in str(info.value)
    assert list(tmp_path.iterdir()) == [src]  # nothing (not even a temp file) left behind


def test_missing_file_and_empty_range(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="price file not found"):
        build_dataset(tmp_path / "nope.csv", tmp_path / "o.parquet")
    src = tmp_path / "p.csv"
    src.write_text(LITERAL_CSV)
    with pytest.raises(DataError, match=r"no prices between --start 2025-01-01 .*2024-01-02 \.\. 2024-01-05"):
        build_dataset(src, tmp_path / "o.parquet", start="2025-01-01")
    with pytest.raises(DataError, match="not a date"):
        build_dataset(src, tmp_path / "o.parquet", end="2024-13-01")
    with pytest.raises(DataError, match="warm-up"):  # 4 rows per stock < LOOKBACK
        build_dataset(src, tmp_path / "o.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_end_cuts_targets(tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    src.write_text(LITERAL_CSV)
    build_dataset(src, tmp_path / "o.parquet", end="2024-01-04", cfg=_cfg([1]), drop_warmup=False)
    df = pl.read_parquet(tmp_path / "o.parquet")
    assert df["Date"].max() == dt.date(2024, 1, 4)
    assert df["feat_ret_1d"].to_list() == pytest.approx([0.2, -0.25, None, 0.0, 1.0, None])


def test_cli_build_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _prices().write_parquet(tmp_path / "p.parquet")
    out = tmp_path / "d.parquet"
    assert main(["build-dataset", "--prices", str(tmp_path / "p.parquet"), "--out", str(out),
                 "--start", "2021-03-10"]) == 0
    printed = capsys.readouterr().out
    assert "stocks" in printed and "6 stocks" in printed and "features" in printed
    assert pl.read_parquet(out)["Date"].min() == dt.date(2021, 3, 10)
    assert main(["build-dataset", "--prices", str(tmp_path / "x.csv"), "--out", str(out)]) == 2
