"""The peers of the family benchmark (bench/family.py): neighbour means use only what is known at the date."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from atft.config import load
from atft.synth.cache import write_panel
from atft.synth.generator import SynthParams, generate
from atft.train.prepare import prepare

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
family = pytest.importorskip("family")  # needs bench/ (a source checkout), not lightgbm


def _design_at(path: Path, day: int) -> tuple[np.ndarray, np.ndarray]:
    cfg = load("default", [f"data.path={path}", "graph.lookback=60", "train.num_threads=1"], apply_env=False)
    prep = prepare(cfg, str(path))
    rows = np.flatnonzero(prep.panel.valid[day])
    return family.own_and_neighbour_design(prep, cfg.graph)(day, rows), rows


def test_neighbour_means_use_no_later_data(tmp_path: Path) -> None:
    params = SynthParams(stocks=60, days=260, features=6, informative=3, sectors=12, seed=21)
    res = generate(params, (1, 5, 10, 20))
    path = write_panel(tmp_path / "a.parquet", res)
    dates = res.panel["Date"].unique().sort()
    day = 200  # a test-split date (the normalizer is fit on the train dates only)
    cut = dates[day]
    feats, targets = res.meta["columns"]["features"], res.meta["columns"]["targets"]
    rng = np.random.default_rng(0)
    noise = pl.Series(rng.standard_normal(res.panel.height))
    changed = res.panel.with_columns(
        *[pl.when(pl.col("Date") > cut).then(pl.col(f) * -1.7 + noise).otherwise(pl.col(f)).cast(pl.Float32).alias(f)
          for f in feats],  # features after the date
        *[pl.when(pl.col("Date") >= cut).then(pl.col(t) * 0.3 - 0.01 * noise).otherwise(pl.col(t))
          .cast(pl.Float32).alias(t) for t in targets],  # returns not yet realized at the date
    )
    assert not changed.equals(res.panel)
    path_b = write_panel(tmp_path / "b.parquet", replace(res, panel=changed))
    a, rows_a = _design_at(path, day)
    b, rows_b = _design_at(path_b, day)
    nf = len(feats)
    assert a.shape == (rows_a.size, 3 * nf) and np.array_equal(rows_a, rows_b)
    np.testing.assert_array_equal(a, b)
    later_a, _ = _design_at(path, day + 1)
    later_b, _ = _design_at(path_b, day + 1)
    assert not np.array_equal(later_a, later_b)  # the planted change is visible one day later


def test_peer_design_does_not_move_with_the_sector_peers_of_atfts_graph(tmp_path: Path) -> None:
    """The peers' correlation-neighbour mean is the graph without sector peers, whatever
    ``graph.sector_k`` atft trains with (the sector mean is an input of its own)."""
    res = generate(SynthParams(stocks=60, days=260, features=6, informative=3, sectors=12, seed=22), (1, 5, 10, 20))
    path = write_panel(tmp_path / "a.parquet", res)
    cfg = load("default", [f"data.path={path}", "graph.lookback=60", "train.num_threads=1"], apply_env=False)
    prep = prepare(cfg, str(path))
    rows = np.flatnonzero(prep.panel.valid[200])
    with_peers = family.own_and_neighbour_design(prep, replace(cfg.graph, sector_k=8))(200, rows)
    without = family.own_and_neighbour_design(prep, replace(cfg.graph, sector_k=0))(200, rows)
    np.testing.assert_array_equal(with_peers, without)
    sector_graph = family.GraphBuilder.from_config(replace(cfg.graph, sector_k=8)).for_date(prep.panel, 200, rows)
    correlation = family.GraphBuilder.from_config(replace(cfg.graph, sector_k=0)).for_date(prep.panel, 200, rows)
    assert sector_graph[0].shape[1] > correlation[0].shape[1]  # the sector peers would have changed it


def test_adaptive_norm_effect_measures_the_branch_and_reads_zero_when_it_is_off(tmp_path: Path) -> None:
    """The FAN/SAN figure of the family bench: 0 with the gate ``norm_scale`` at 0 (the branch
    adds nothing), > 0 once the gate is open; the output change grows with the gate."""
    import torch

    from atft.model.atft_gat_fan import ATFT_GAT_FAN
    from atft.train.checkpoint import save_checkpoint

    params = SynthParams(stocks=40, days=200, features=6, informative=3, sectors=8, seed=5)
    path = write_panel(tmp_path / "p.parquet", generate(params, (1, 5, 10, 20)))
    cfg = load("smoke", [f"data.path={path}", "graph.lookback=40"], apply_env=False)
    prep = prepare(cfg, str(path))
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, prep.num_features)
    figures = []
    for gate in (0.0, 0.05, 0.5):
        with torch.no_grad():
            model.norm_scale.fill_(gate)
        ck = tmp_path / f"g{gate}.pt"
        save_checkpoint(ck, model, cfg, prep.normalizer)
        figures.append(family.adaptive_norm_effect(ck, prep))
    off, small, large = figures
    assert off["branch / sequence"] == 0.0 and off["output change / spread"] == 0.0
    assert 0.0 < small["branch / sequence"] < large["branch / sequence"]
    assert 0.0 < small["output change / spread"] < large["output change / spread"]
    assert large["|norm_scale|"] == pytest.approx(0.5)


def test_saved_runs_merge_per_contender_later_files_winning(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from atft.eval.metrics import DailyIC

    def panel(ic: float, names: list[str]) -> dict[str, object]:
        daily = DailyIC(np.arange(3), np.full(3, ic), np.zeros(3, dtype=np.int64), 0)
        return {"facts": {n: {"best_epoch": 1} for n in names},
                "scores": {n: {"horizon_1d": {"ic": ic, "oracle_ic": 0.1, "ratio": ic / 0.1}} for n in names},
                "daily": {n: {"horizon_1d": daily} for n in names}}

    args = SimpleNamespace(stocks=10, dates=20, epochs=1, patience=0, seeds=[5], worlds=["sector"], overrides=[])
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(family.to_json({"sector": {5: panel(0.05, ["atft", "ridge own"])}}, args)))
    new.write_text(json.dumps(family.to_json({"sector": {5: panel(0.07, ["atft"])}}, args)))
    merged = family.from_json([str(old), str(new)])["sector"][5]
    assert merged["scores"]["atft"]["horizon_1d"]["ic"] == 0.07  # the later file's run
    assert merged["scores"]["ridge own"]["horizon_1d"]["ic"] == 0.05  # kept from the earlier file
    assert set(merged["daily"]) == {"atft", "ridge own"}


def test_a_family_run_removes_its_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Panels, runs and checkpoints (~0.3 GiB a panel) go, whether the run ends or fails."""
    import tempfile
    from types import SimpleNamespace

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[Path] = []

    def run(args: object, out_dir: Path, fail: bool) -> int:
        (out_dir / "panel.parquet").write_bytes(b"x")
        seen.append(out_dir)
        if fail:
            raise RuntimeError("a fit failed")
        return 0

    args = SimpleNamespace(quick=False, contenders=["ridge own"], worlds=["sector"])
    monkeypatch.setattr(family, "_run_family", lambda a, d: run(a, d, fail=False))
    assert family.family_main(args) == 0
    monkeypatch.setattr(family, "_run_family", lambda a, d: run(a, d, fail=True))
    with pytest.raises(RuntimeError, match="a fit failed"):
        family.family_main(args)
    assert len(seen) == 2 and all(d.parent == tmp_path and not d.exists() for d in seen)
    assert list(tmp_path.iterdir()) == []
