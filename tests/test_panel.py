"""load_panel: long parquet -> dense [D, N, F] panel, lagged backward returns, data errors."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft.config import Config
from atft.data.panel import lag_one_date, load_panel
from atft.errors import DataError

D0 = dt.date(2021, 3, 1)


def _cfg(**data: object) -> Config:
    cfg = Config()
    cfg.data.horizons = [1, 2]
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _tiny() -> pl.DataFrame:
    """3 dates x 2 stocks, rows in scrambled order, (B, day 1) missing, one null feature."""
    rows = [  # Code, day, sector, market, x0, x1, feat_ret_1d, feat_ret_2d
        ("B", 2, "S2", None, 6.0, 60.0, 0.06, None),
        ("A", 0, "S1", "M1", 1.0, 10.0, 0.01, 0.011),
        ("A", 2, "S1", "M1", 3.0, None, None, None),
        ("B", 0, "S2", None, 4.0, 40.0, 0.04, 0.044),
        ("A", 1, "S1", "M1", 2.0, 20.0, 0.02, None),
    ]
    return pl.DataFrame(
        {
            "Code": [r[0] for r in rows],
            "Date": [D0 + dt.timedelta(days=r[1]) for r in rows],
            "sector": [r[2] for r in rows],
            "market": [r[3] for r in rows],
            "x0": [r[4] for r in rows],
            "x1": [r[5] for r in rows],
            "feat_ret_1d": [r[6] for r in rows],
            "feat_ret_2d": [r[7] for r in rows],
        },
        schema_overrides={"x1": pl.Float64},
    )


def _write(df: pl.DataFrame, tmp_path: Path, name: str = "p.parquet") -> str:
    path = tmp_path / name
    df.write_parquet(path)
    return str(path)


def test_dense_pivot_exact(tmp_path: Path) -> None:
    p = load_panel(_cfg(), _write(_tiny(), tmp_path))
    assert p.codes == ["A", "B"]
    assert p.dates == [D0, D0 + dt.timedelta(days=1), D0 + dt.timedelta(days=2)]
    assert p.feature_names == ["x0", "x1"] and p.target_names == ["feat_ret_1d", "feat_ret_2d"]
    assert p.features.dtype == np.float32 and p.features.shape == (3, 2, 2)
    nan = math.nan
    np.testing.assert_array_equal(p.features[:, :, 0], np.array([[1, 4], [2, nan], [3, 6]], np.float32))
    np.testing.assert_array_equal(p.features[:, :, 1], np.array([[10, 40], [20, nan], [nan, 60]], np.float32))
    np.testing.assert_array_equal(p.valid, [[True, True], [True, False], [True, True]])
    np.testing.assert_allclose(p.targets[:, :, 1], [[0.011, 0.044], [nan, nan], [nan, nan]])
    assert p.horizons == [1, 2]
    np.testing.assert_array_equal(p.sector, [0, 1])
    np.testing.assert_array_equal(p.market, [0, -1])  # B has no market value -> unknown


def test_returns_are_the_one_day_target_lagged_one_date(tmp_path: Path) -> None:
    p = load_panel(_cfg(), _write(_tiny(), tmp_path))
    nan = math.nan
    # returns[d] = feat_ret_1d[d-1]: realized by d, known at d (never the forward value at d)
    np.testing.assert_allclose(p.returns, [[nan, nan], [0.01, 0.04], [0.02, nan]], rtol=1e-6)
    assert p.returns.dtype == np.float32


def test_lag_one_date() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(lag_one_date(x), [[np.nan, np.nan], [1, 2], [3, 4]])


def test_explicit_return_column_is_used_as_is(tmp_path: Path) -> None:
    df = _tiny().with_columns((pl.col("x0") / 100).alias("bk_ret_1d"))
    cfg = _cfg(exclude=["bk_ret_1d"])
    cfg.graph.return_column = "bk_ret_1d"
    p = load_panel(cfg, _write(df, tmp_path))
    np.testing.assert_allclose(p.returns, [[0.01, 0.04], [0.02, np.nan], [0.03, 0.06]], rtol=1e-6)
    assert "bk_ret_1d" not in p.feature_names


def test_forward_return_as_graph_column_is_rejected(tmp_path: Path) -> None:
    cfg = _cfg()
    cfg.graph.return_column = "feat_ret_2d"
    with pytest.raises(DataError, match="forward-return target"):
        load_panel(cfg, _write(_tiny(), tmp_path))


def test_without_one_day_target_the_graph_return_is_an_error(tmp_path: Path) -> None:
    df = _tiny().rename({"feat_ret_1d": "feat_ret_3d"})
    with pytest.raises(DataError, match="'feat_ret_1d' is not in the data"):
        load_panel(_cfg(horizons=[2]), _write(df, tmp_path))


def test_explicit_features_subset(tmp_path: Path) -> None:
    p = load_panel(_cfg(features=["x1"]), _write(_tiny(), tmp_path))
    assert p.feature_names == ["x1"] and p.features.shape == (3, 2, 1)


def test_target_among_features_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"feat_ret_1d.*Fix:"):
        load_panel(_cfg(features=["x0", "feat_ret_1d"]), _write(_tiny(), tmp_path))


def test_missing_target_names_template(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"target columns missing.*feat_ret_5d"):
        load_panel(_cfg(horizons=[1, 5]), _write(_tiny(), tmp_path))


def test_duplicate_code_date_is_rejected(tmp_path: Path) -> None:
    df = _tiny()
    df = pl.concat([df, df.head(1)])
    with pytest.raises(DataError, match=r"1 duplicate \(Code, Date\) pairs.*'B'"):
        load_panel(_cfg(), _write(df, tmp_path))


def test_empty_dataset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        load_panel(_cfg(), _write(_tiny().head(0), tmp_path))


def test_null_code_is_rejected(tmp_path: Path) -> None:
    df = _tiny().with_columns(pl.when(pl.col("x0") == 2.0).then(None).otherwise(pl.col("Code")).alias("Code"))
    with pytest.raises(DataError, match="1 rows with a null 'Code'"):
        load_panel(_cfg(), _write(df, tmp_path))


def test_directory_of_files_and_chunked_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import atft.data.panel as panel_mod

    monkeypatch.setattr(panel_mod, "CHUNK_COLUMNS", 1)  # every column its own pass
    df = _tiny()
    (tmp_path / "ds").mkdir()
    df.head(2).write_parquet(tmp_path / "ds" / "a.parquet")
    df.tail(3).write_parquet(tmp_path / "ds" / "b.parquet")
    p = load_panel(_cfg(), str(tmp_path / "ds"))
    whole = load_panel(_cfg(), _write(df, tmp_path))
    np.testing.assert_array_equal(p.features, whole.features)
    np.testing.assert_array_equal(p.targets, whole.targets)


def test_random_panel_matches_pandas_pivot(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    codes = [f"S{i:02d}" for i in range(7)]
    rows = [(c, D0 + dt.timedelta(days=int(d))) for c in codes for d in range(9) if rng.random() > 0.25]
    df = pl.DataFrame({"Code": [r[0] for r in rows], "Date": [r[1] for r in rows]}).with_columns(
        pl.Series("x0", rng.normal(size=len(rows))), pl.Series("feat_ret_1d", rng.normal(size=len(rows))),
        pl.Series("feat_ret_2d", rng.normal(size=len(rows))),
    ).sample(fraction=1.0, shuffle=True, seed=1)
    p = load_panel(_cfg(), _write(df, tmp_path))
    pdf = df.to_pandas().pivot(index="Date", columns="Code", values="x0")
    np.testing.assert_allclose(p.features[:, :, 0], pdf.to_numpy(dtype=np.float32), rtol=1e-6)
    np.testing.assert_array_equal(p.valid, ~np.isnan(pdf.to_numpy()))
