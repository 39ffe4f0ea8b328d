"""Tests of the synthetic panel (atft.synth.generator, atft.synth.cache) and its oracle (atft.synth.oracle)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft import cli
from atft.config import Config
from atft.data import source
from atft.errors import InputError
from atft.horizons import looks_like_target, output_key, target_column, truth_column
from atft.synth.cache import ensure_default_panel, sidecar_path, truth_path, write_panel
from atft.synth.generator import SynthParams, SynthResult, generate
from atft.synth.oracle import daily_ic

HORIZONS = (1, 5, 10, 20)
SMALL = SynthParams(stocks=60, days=300, features=12, informative=4, sectors=12, seed=3)
TARGETS = [target_column(h) for h in HORIZONS]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthResult]:
    out = tmp_path_factory.mktemp("synth") / "panel.parquet"
    result = generate(SMALL, HORIZONS)
    return write_panel(out, result), result


def _wide(panel: pl.DataFrame, column: str, codes: list[str]) -> np.ndarray:
    """[D, N] float64 of ``column`` (NaN where the row or value is missing), codes in given order."""
    wide = panel.pivot(on="Code", index="Date", values=column).sort("Date")
    return wide.select(codes).to_numpy().astype(np.float64)


def test_same_seed_identical_files_different_seed_differs(tmp_path: Path) -> None:
    small = SynthParams(stocks=40, days=80, features=6, informative=2, sectors=10, seed=11)
    a = write_panel(tmp_path / "a.parquet", generate(small, (1, 5)))
    b = write_panel(tmp_path / "b.parquet", generate(small, (1, 5)))
    for f in (lambda p: p, truth_path):
        assert pl.read_parquet(f(a)).equals(pl.read_parquet(f(b)))
    meta_a, meta_b = (json.loads(sidecar_path(p).read_text()) for p in (a, b))
    meta_a.pop("files"), meta_b.pop("files")
    assert meta_a == meta_b
    other = generate(SynthParams(stocks=40, days=80, features=6, informative=2, sectors=10, seed=12), (1, 5))
    assert not other.panel.equals(pl.read_parquet(a))


def test_sidecar_oracle_equals_ic_recomputed_from_truth(written: tuple[Path, SynthResult]) -> None:
    path, _ = written
    meta = json.loads(sidecar_path(path).read_text())
    joined = pl.read_parquet(path).join(pl.read_parquet(truth_path(path)), on=["Code", "Date"])
    assert joined.height == pl.read_parquet(path).height
    for h in HORIZONS:
        for col, key in ((truth_column(h), "ic"), (truth_column(h, own_only=True), "no_graph_ic")):
            daily = []
            for _, g in joined.filter(pl.col(target_column(h)).is_not_null()).group_by("Date"):
                if g.height >= meta["oracle_min_stocks"]:
                    daily.append(stats.pearsonr(g[col].to_numpy(), g[target_column(h)].cast(pl.Float64).to_numpy())[0])
            assert meta["oracle"][output_key(h)][key] == pytest.approx(np.mean(daily), abs=1e-6)
            assert meta[{"ic": "oracle_ic", "no_graph_ic": "no_graph_ic"}[key]][output_key(h)] == \
                meta["oracle"][output_key(h)][key]
            if key == "ic":
                assert meta["oracle"][output_key(h)]["icir"] == pytest.approx(
                    np.mean(daily) / np.std(daily, ddof=1), abs=1e-5)
    assert meta["oracle"]["horizon_1d"]["ic"] == pytest.approx(SMALL.oracle_ic, abs=5e-3)


def test_targets_null_in_tail_and_compound_from_daily(written: tuple[Path, SynthResult]) -> None:
    _, res = written
    panel = res.panel
    last_date = panel["Date"].max()
    spans = panel.group_by("Code").agg(pl.col("Date").min().alias("first"), pl.col("Date").max().alias("last"))
    delisted = spans.filter(pl.col("last") < last_date).height
    late = spans.filter(pl.col("first") > panel["Date"].min()).height
    assert (delisted, late) == (res.meta["counts"]["delistings"], res.meta["counts"]["late_listings"])
    assert delisted == 9 and late == 9
    ranked = panel.with_columns(pl.int_range(pl.len()).reverse().over("Code").alias("from_end"))
    for h in HORIZONS:
        col = target_column(h)
        tail = ranked.filter(pl.col("from_end") < h)
        assert tail[col].null_count() == tail.height  # last h rows of each stock, delisted or not
        assert ranked.filter(pl.col("from_end") == h)[col].null_count() == 0  # the row before is set
        prod = ranked.with_columns(pl.fold(
            pl.lit(1.0), lambda acc, x: acc * x,
            [(1.0 + pl.col(TARGETS[0]).cast(pl.Float64).shift(-j).over("Code")) for j in range(h)],
        ).alias("compounded") - 1.0).drop_nulls([col, "compounded"])
        assert prod.height > 0.8 * (panel.height - 60 * h)
        np.testing.assert_allclose(prod["compounded"].to_numpy(), prod[col].to_numpy(), rtol=2e-5, atol=2e-7)


def test_correlation_graph_recovers_sectors(written: tuple[Path, SynthResult]) -> None:
    panel = written[1].panel
    codes = sorted(panel["Code"].unique().to_list())
    sector_of = dict(panel.select("Code", "sector").unique().iter_rows())
    sectors = np.array([sector_of[c] for c in codes])
    r = _wide(panel, TARGETS[0], codes)  # [D, N]
    purity = []
    for start in range(0, r.shape[0] - 60, 60):
        win = r[start:start + 60]
        keep = np.isfinite(win).all(axis=0)
        corr = np.corrcoef(win[:, keep].T)
        np.fill_diagonal(corr, 0.0)
        top = np.abs(corr).argmax(axis=1)
        purity.append(np.mean(sectors[keep][top] == sectors[keep]))
    assert np.mean(purity) > 0.6  # random neighbours: 4 / 59 same-sector


def test_graph_part_matters(written: tuple[Path, SynthResult]) -> None:
    path, res = written
    truth = pl.read_parquet(truth_path(path)).join(res.panel, on=["Code", "Date"])
    valid = truth[TARGETS[0]].is_not_null().to_numpy()
    y = truth[TARGETS[0]].cast(pl.Float64).to_numpy()
    day = truth["Date"].rank("dense").to_numpy().astype(np.int64) - 1
    full = np.full((day.max() + 1, 60), np.nan)

    def ic(col: str) -> float:
        pred, tgt, mask = full.copy(), full.copy(), np.zeros(full.shape, bool)
        stock = truth["Code"].rank("dense").to_numpy().astype(np.int64) - 1
        pred[day, stock], tgt[day, stock], mask[day, stock] = truth[col].to_numpy(), y, valid
        return daily_ic(pred, tgt, mask, 20).mean

    oracle, own = ic(truth_column(1)), ic(truth_column(1, own_only=True))
    assert own < oracle - 0.01
    assert res.meta["oracle"]["horizon_1d"]["graph_share_of_oracle"] > 0.1


def test_planted_mean_uses_only_date_t_features() -> None:
    p = SynthParams(stocks=48, days=100, features=8, informative=3, sectors=12, missing_share=0.0, seed=5)
    res = generate(p, (1,))
    m, panel = res.meta, res.panel.join(res.truth, on=["Code", "Date"])
    own = sum(w * pl.col(name).cast(pl.Float64) for name, w in m["own_weights"].items())
    peer_col = pl.col(m["feature_roles"]["peer"][0]).cast(pl.Float64)
    peer_sum = peer_col.sum().over("Date", "sector") - peer_col
    n_peers = (pl.len().over("Date", "sector") - 1).cast(pl.Float64)
    s = p.graph_share
    u = np.sqrt(1 - s) * own + np.sqrt(s) * peer_sum / n_peers.sqrt()
    per_date = panel.with_columns(u.alias("u")).group_by("Date").agg(
        pl.corr("u", truth_column(1)).alias("r_full"),
        pl.corr(own, truth_column(1, own_only=True)).alias("r_own"),
    )
    assert per_date["r_full"].min() > 0.99999 and per_date["r_own"].min() > 0.99999


def test_schema_and_feature_names(written: tuple[Path, SynthResult]) -> None:
    path, res = written
    panel = pl.read_parquet(path)
    feats = res.meta["columns"]["features"]
    assert panel.columns == ["Code", "Date", "sector", *feats, *TARGETS]
    assert feats == [f"x{k:03d}" for k in range(12)]
    assert dict(panel.schema) == {"Code": pl.String, "Date": pl.Date, "sector": pl.String,
                                  **{f: pl.Float32 for f in feats}, **{t: pl.Float32 for t in TARGETS}}
    assert not any(looks_like_target(f) for f in feats)
    assert all(re.fullmatch(r"\d{4}", c) for c in panel["Code"].unique())
    assert sorted(panel["sector"].unique()) == [f"S{k:02d}" for k in range(12)]
    assert panel.equals(panel.sort("Code", "Date")) and not panel.select("Code", "Date").is_duplicated().any()
    assert (panel["Date"].dt.weekday() <= 5).all()
    roles = res.meta["feature_roles"]
    assert sorted(roles["informative"] + roles["peer"] + roles["noise"]) == feats
    assert (len(roles["informative"]), len(roles["peer"])) == (4, 1)
    nulls = panel.select(pl.col(feats).null_count()).to_numpy().sum() / (panel.height * len(feats))
    assert 0.005 < nulls < 0.015
    truth = pl.read_parquet(truth_path(path))
    assert truth.columns == ["Code", "Date", *[truth_column(h) for h in HORIZONS],
                             *[truth_column(h, True) for h in HORIZONS]]
    assert source.resolve_files(path.parent) == [path]  # the truth file never joins a dataset


def test_ensure_default_panel_generates_once(tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.horizons = [1, 5]
    cfg.data.synthetic.stocks, cfg.data.synthetic.days = 40, 80
    cfg.data.synthetic.features, cfg.data.synthetic.informative, cfg.data.synthetic.sectors = 6, 2, 10
    first = ensure_default_panel(cfg)
    stamp = first.stat().st_mtime_ns
    assert first.name.startswith("synth_") and sidecar_path(first).exists() and truth_path(first).exists()
    assert ensure_default_panel(cfg) == first and first.stat().st_mtime_ns == stamp
    cfg.data.synthetic.seed = 1
    assert ensure_default_panel(cfg) != first
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_bad_input_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="features=4 < informative"):
        generate(SynthParams(stocks=40, days=80, features=4, informative=4), (1,))
    with pytest.raises(InputError, match="days=30"):
        generate(SynthParams(stocks=40, days=30, features=6, informative=2), (1, 20))
    res = generate(SynthParams(stocks=40, days=80, features=6, informative=2, sectors=10), (1,))
    with pytest.raises(InputError, match="must end with '.parquet'"):
        write_panel(tmp_path / "panel.csv", res)
    assert not list(tmp_path.iterdir())


def test_cli_synth_writes_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.parquet"
    rc = cli.main(["synth", "--out", str(out), "--config", "smoke", "--days", "120", "--seed", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "horizon_1d" in printed and "generated in" in printed
    meta = json.loads(sidecar_path(out).read_text())
    assert (meta["shape"]["stocks"], meta["shape"]["days"], meta["seed"]) == (60, 120, 2)
    assert pl.read_parquet(out).height == meta["shape"]["rows"] == pl.read_parquet(truth_path(out)).height
    assert cli.main(["synth", "--out", str(tmp_path / "bad.txt"), "--config", "smoke"]) == 2


def test_cli_synth_few_stocks_gets_fewer_sectors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "few.parquet"
    assert cli.main(["synth", "--out", str(out), "--stocks", "40", "--days", "80", "--features", "6"]) == 0
    assert "20 sectors" in capsys.readouterr().out
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["params"]["sectors"] == 20 and pl.read_parquet(out)["sector"].n_unique() == 20
