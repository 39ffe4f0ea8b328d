"""The family of synthetic markets (atft.synth.worlds) and the observable ceilings (atft.synth.ceilings)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft import cli
from atft.config import Config
from atft.horizons import DEFAULT_TEMPLATE, target_column, truth_column
from atft.synth.cache import default_panel_name, sidecar_path
from atft.synth.ceilings import neighbour_design
from atft.synth.generator import DEFAULT_HORIZONS, SynthParams, SynthResult, generate
from atft.synth.worlds import WORLDS

HORIZONS = (1, 5, 10, 20)
TINY = SynthParams(stocks=60, days=300, features=12, informative=6, sectors=12, seed=3)


def _digest(res: SynthResult) -> str:
    """Hash of every value of the panel and the truth frame (column names, dtypes, bytes)."""
    h = hashlib.sha256()
    for frame in (res.panel, res.truth):
        for name in frame.columns:
            col = frame[name]
            h.update(name.encode())
            if col.dtype == pl.String or col.dtype.is_temporal():
                h.update(col.cast(str).to_numpy().astype(str).tobytes())
            else:
                h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
    return h.hexdigest()[:16]


def _world(name: str, base: SynthParams = TINY) -> SynthResult:
    return generate(replace(base, **WORLDS[name].overrides), HORIZONS, world=name)


@pytest.fixture(scope="module")
def worlds() -> dict[str, SynthResult]:
    return {name: _world(name) for name in WORLDS}


def test_sector_world_is_the_default_generator_bit_for_bit() -> None:
    """Digest and c recorded before the family existed (commit c031c59), and the cache key."""
    small = SynthParams(stocks=60, days=300, features=12, informative=4, sectors=12, seed=3)
    res = generate(small, HORIZONS, world="sector")
    assert _digest(res) == "b28a5786787863f9"
    assert res.meta["signal_scale_c"] == 0.002836043836872634
    assert _digest(generate(small, HORIZONS)) == "b28a5786787863f9"
    params = SynthParams.from_config(Config().data.synthetic)
    assert default_panel_name(params, list(DEFAULT_HORIZONS), DEFAULT_TEMPLATE) == "synth_6499e1c91ae4.parquet"


@pytest.mark.parametrize("name", list(WORLDS))
def test_each_world_generates_deterministically(name: str, worlds: dict[str, SynthResult]) -> None:
    res = worlds[name]
    assert _digest(_world(name)) == _digest(res)
    assert _digest(generate(replace(TINY, seed=4, **WORLDS[name].overrides), HORIZONS, world=name)) != _digest(res)
    assert res.meta["world"] == name and res.panel.height == res.truth.height
    assert res.truth.columns == ["Code", "Date", *[truth_column(h) for h in HORIZONS],
                                 *[truth_column(h, True) for h in HORIZONS]]
    assert res.truth.select(pl.all().exclude("Code", "Date").is_finite().all()).row(0) == (True,) * 8


def test_worlds_differ() -> None:
    digests = {name: _digest(_world(name)) for name in ("sector", "supply-chain", "nonlinear", "regime")}
    assert len(set(digests.values())) == 4


@pytest.mark.parametrize("name", list(WORLDS))
def test_oracle_positive_and_ceilings_ordered(name: str, worlds: dict[str, SynthResult]) -> None:
    meta = worlds[name].meta
    target = WORLDS[name].overrides.get("oracle_ic", 0.10)
    assert meta["oracle"]["horizon_1d"]["ic"] == pytest.approx(target, abs=1e-6)  # calibrated on the draw
    for key, o in meta["oracle"].items():
        assert o["ic"] > 0, key
    ceil = meta["ceilings"]["horizon_1d"]
    assert ceil["oracle_ic"] > 0 and ceil["test_dates"] == 45
    # on 45 dates x 60 stocks only what must hold (sd of a mean IC ~0.02): nothing far above the oracle
    assert ceil["linear_observable_ratio"] < 1.3 and ceil["linear_own_ratio"] < 1.3


def test_world_truth_is_the_conditional_mean() -> None:
    """Pooled regression of the realized h-day return on the planted mu_h (per-date demeaned):
    slope ~1 when mu_h is E[r_h | t]; a wrong lag, persistence or threshold law biases it."""
    base = SynthParams(stocks=150, days=700, features=12, informative=6, sectors=15, seed=11, oracle_ic=0.2)
    for name in ("supply-chain", "nonlinear", "regime"):
        res = _world(name, base)
        frame = res.panel.join(res.truth, on=["Code", "Date"])
        for h in (1, 5):
            y, m = target_column(h), truth_column(h)
            d = frame.select((pl.col(y) - pl.col(y).mean().over("Date")).alias("y"),
                             (pl.col(m) - pl.col(m).mean().over("Date")).alias("m")).drop_nulls()
            slope = float((d["y"] * d["m"]).sum() / (d["m"] ** 2).sum())
            assert 0.75 < slope < 1.25, (name, h, slope)


def test_supply_chain_graph_is_partly_outside_the_sector(worlds: dict[str, SynthResult]) -> None:
    facts = worlds["supply-chain"].meta["world_facts"]
    assert 0.25 < facts["in_sector_link_share"] < 0.75
    assert facts["peer_phi"] == [0.2, 0.6, 0.95] and facts["peer_lag"] == [0, 1, 0]
    nbr = np.array(facts["hidden_graph"]["suppliers"])
    assert nbr.shape == (60, 4) and not (nbr == np.arange(60)[:, None]).any()


def test_neighbour_design_means() -> None:
    x = np.arange(12, dtype=np.float64).reshape(6, 2)  # 6 stocks, 2 features
    listed = np.array([True, True, True, True, False, True])
    sector = np.array([0, 0, 0, 1, 1, 1])
    nbr = np.array([[1, 4], [0, 2], [1, 0], [5, 4], [3, 5], [3, 2]])
    out = neighbour_design(x, np.array([0, 3]), listed, sector, nbr)
    assert out.shape == (2, 6)
    np.testing.assert_allclose(out[0], [0, 1, 3, 4, 2, 3])  # sector peers 1, 2; neighbour 1 (4 unlisted)
    np.testing.assert_allclose(out[1], [6, 7, 10, 11, 10, 11])  # sector peer 5 (4 unlisted); neighbour 5


def test_cli_synth_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.parquet"
    assert cli.main(["synth", "--out", str(out), "--world", "weak", "--stocks", "60", "--days", "200",
                     "--features", "12", "--seed", "1"]) == 0
    assert "world weak" in capsys.readouterr().out
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["world"] == "weak" and meta["params"]["oracle_ic"] == 0.05 and meta["params"]["stocks"] == 60
    with pytest.raises(SystemExit):  # argparse names the choices
        cli.main(["synth", "--out", str(out), "--world", "nope"])
