"""GraphBuilder: pairwise-complete correlations by matmul, top-k, symmetric, no look-ahead, cache."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from atft.config import GraphConfig
from atft.data.panel import Panel
from atft.errors import InputError
from atft.graph.builder import GraphBuilder
from tests.reference import pairwise_corr, raw_builder

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread, restored after the module


def block_returns(num_dates: int = 60, groups: int = 3, per_group: int = 8, seed: int = 0,
                  missing: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """[L, N] returns with a planted block structure (group factor + noise), some NaN; group ids."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per_group)
    factors = rng.normal(size=(num_dates, groups))
    r = 0.01 * (factors[:, g] + 0.6 * rng.normal(size=(num_dates, g.size)))
    r[rng.random(r.shape) < missing] = np.nan
    return r, g


def loop_corr(r: np.ndarray, min_obs: int) -> np.ndarray:
    """The straightforward per-pair reference."""
    n = r.shape[1]
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            m = ~np.isnan(r[:, i]) & ~np.isnan(r[:, j])
            if m.sum() >= min_obs and r[m, i].std() > 0 and r[m, j].std() > 0:
                out[i, j] = np.corrcoef(r[m, i], r[m, j])[0, 1]
    return out


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.T.tolist()))


def make_panel(returns: np.ndarray, sector: np.ndarray | None = None, market: np.ndarray | None = None) -> Panel:
    d, n = returns.shape
    return Panel(features=np.zeros((d, n, 1), np.float32), targets=np.zeros((d, n, 1), np.float32),
                 valid=np.ones((d, n), bool), returns=returns.astype(np.float32), codes=[f"C{i}" for i in range(n)],
                 dates=[dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(d)], feature_names=["x"],
                 target_names=["feat_ret_1d"], horizons=[1],
                 sector=np.full(n, -1) if sector is None else sector, market=np.full(n, -1) if market is None else market)


def test_correlation_matches_per_pair_loop() -> None:
    r, _ = block_returns(num_dates=30, groups=2, per_group=4, missing=0.25, seed=1)
    r[:, 0] = np.nan
    r[:8, 0] = np.arange(8)  # few observations: below min_obs with most partners
    rho, n = pairwise_corr(r)
    want = loop_corr(r, min_obs=1)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(rho.numpy()[ok], want[ok], atol=1e-5)
    counts = (~np.isnan(r)).astype(float).T @ (~np.isnan(r)).astype(float)
    np.testing.assert_array_equal(n.numpy(), counts)


def test_edges_match_reference_topk_union() -> None:
    r, _ = block_returns(num_dates=50, groups=3, per_group=5, missing=0.1, seed=2)
    b = raw_builder(lookback=50, min_obs=30, top_k=2, threshold=0.2, cache_size=0)
    ei, ea = b.build(r, np.full(15, -1), np.full(15, -1))
    ref = loop_corr(r, min_obs=30)
    score = np.where(np.isnan(ref), -1.0, np.abs(ref))
    np.fill_diagonal(score, -1.0)
    want: set[tuple[int, int]] = set()
    for i in range(15):
        for j in np.argsort(-score[i])[:2]:  # top-k per node BEFORE symmetrization
            if score[i, j] > 0.2:
                want |= {(i, int(j)), (int(j), i)}
    assert edge_set(ei) == want
    np.testing.assert_allclose(ea[:, 0].numpy(), ref[ei[0].numpy(), ei[1].numpy()], atol=1e-5)


def test_planted_blocks_recovered_symmetric_no_self_loops() -> None:
    r, g = block_returns(num_dates=60, groups=3, per_group=10, seed=3)
    ei, ea = raw_builder(lookback=60, min_obs=40, top_k=5, threshold=0.3).build(r, g, np.zeros(30, np.int64))
    src, dst = ei.numpy()
    assert ei.dtype == torch.long and ea.dtype == torch.float32 and ea.shape == (ei.shape[1], 3)
    assert ei.shape[1] >= 30 * 5  # every node keeps its top-5 (before the union)
    assert (g[src] == g[dst]).mean() > 0.95
    assert edge_set(ei) == {(j, i) for i, j in edge_set(ei)}
    assert not (src == dst).any() and src.min() >= 0 and max(src.max(), dst.max()) < 30
    np.testing.assert_array_equal(ea[:, 1].numpy(), (g[src] == g[dst]).astype(np.float32))  # sector = group
    assert (ea[:, 2] == 1).all()  # everyone in market 0
    assert (ea[:, 0].abs() > 0.3).all()


def test_top_k_bounds_out_degree_before_union() -> None:
    r, g = block_returns(num_dates=60, groups=1, per_group=12, seed=4)
    ei, _ = raw_builder(lookback=60, min_obs=40, top_k=3, threshold=0.0).build(r, g, g)
    deg = np.bincount(ei[0].numpy(), minlength=12)
    # one dense block: each node picks 3, the union adds in-edges; never more than 3 + in-picks
    assert deg.min() >= 3 and ei.shape[1] <= 2 * 12 * 3


def test_unknown_sector_and_market_are_zero() -> None:
    r, g = block_returns(num_dates=60, groups=1, per_group=4, seed=5)
    sector = np.array([-1, -1, 0, 0])
    ei, ea = raw_builder(lookback=60, min_obs=40, top_k=3).build(r, sector, np.full(4, -1))
    same = {(int(s), int(d)): float(v) for s, d, v in zip(ei[0], ei[1], ea[:, 1], strict=True)}
    assert same[(0, 1)] == 0.0 and same[(2, 3)] == 1.0
    assert (ea[:, 2] == 0).all()


def test_degenerate_inputs_give_empty_graphs() -> None:
    b = raw_builder(lookback=10, min_obs=5, top_k=2)
    for r in (np.zeros((10, 1)), np.zeros((10, 0)), np.zeros((3, 5)), np.full((10, 4), np.nan)):
        ei, ea = b.build(r, np.zeros(r.shape[1], np.int64), np.zeros(r.shape[1], np.int64))
        assert ei.shape == (2, 0) and ea.shape == (0, 3)


def test_no_look_ahead_in_for_date() -> None:
    r, g = block_returns(num_dates=100, groups=2, per_group=6, seed=6, missing=0.0)
    d, rows = 70, np.arange(12)
    make = lambda: raw_builder(lookback=30, min_obs=20, top_k=3, threshold=0.1, cache_size=0)  # noqa: E731
    base = make().for_date(make_panel(r), d, rows)
    future = r.copy()
    future[d + 1:] = np.random.default_rng(9).normal(size=future[d + 1:].shape)  # every later return
    after = make().for_date(make_panel(future), d, rows)
    assert torch.equal(base[0], after[0]) and torch.equal(base[1], after[1])
    past = r.copy()
    past[d - 29:d + 1] = np.random.default_rng(9).normal(size=past[d - 29:d + 1].shape)  # inside the window
    changed = make().for_date(make_panel(past), d, rows)
    assert edge_set(changed[0]) != edge_set(base[0])


def test_for_date_indices_are_into_rows_and_window_ends_at_d() -> None:
    r, g = block_returns(num_dates=80, groups=2, per_group=6, seed=7, missing=0.0)
    panel = make_panel(r, sector=g)
    rows = np.array([11, 0, 7, 3, 5])
    ei, ea = raw_builder(lookback=40, min_obs=30, top_k=2, threshold=0.1).for_date(panel, 60, rows)
    want_ei, want_ea = raw_builder(lookback=40, min_obs=30, top_k=2, threshold=0.1).build(
        r[21:61][:, rows], g[rows], np.full(5, -1))
    assert torch.equal(ei, want_ei) and torch.allclose(ea, want_ea)
    assert ei.numel() and ei.max() < rows.size


def test_cache_key_includes_the_date() -> None:
    r, g = block_returns(num_dates=120, groups=3, per_group=5, seed=8, missing=0.0)
    r[60:] = np.random.default_rng(1).normal(size=r[60:].shape)  # regime change: different graphs later
    panel = make_panel(r, sector=g)
    b = raw_builder(lookback=40, min_obs=30, top_k=3, threshold=0.2, cache_size=8)
    rows = np.arange(15)
    g_early = b.for_date(panel, 59, rows)
    g_late = b.for_date(panel, 110, rows)  # same rows, another date (and same first date character)
    assert str(panel.dates[59])[0] == str(panel.dates[110])[0]
    assert edge_set(g_early[0]) != edge_set(g_late[0]) and b.misses == 2 and b.hits == 0
    assert b.for_date(panel, 59, rows) is g_early and b.hits == 1
    b.for_date(panel, 59, rows[:10])  # other rows -> other entry
    assert b.misses == 3 and b.cached == 3 and bool(b)


def test_cache_is_bounded_lru() -> None:
    r, _ = block_returns(num_dates=50, groups=1, per_group=4, seed=9)
    panel = make_panel(r)
    b = raw_builder(lookback=10, min_obs=5, top_k=2, cache_size=2)
    for d in (10, 11, 10, 12):  # 10 refreshed, so 11 is evicted
        b.for_date(panel, d, np.arange(4))
    assert b.cached == 2 and b.hits == 1
    b.for_date(panel, 10, np.arange(4))
    b.for_date(panel, 11, np.arange(4))
    assert b.hits == 2 and b.misses == 4
    one = raw_builder(lookback=10, min_obs=5, top_k=2, threshold=0.0)
    size = sum(t.element_size() * t.numel() for t in one.for_date(panel, 10, np.arange(4)))
    assert size > 0
    small = raw_builder(lookback=10, min_obs=5, top_k=2, threshold=0.0, cache_bytes=2 * size)
    for d in (10, 11, 12, 13):
        small.for_date(panel, d, np.arange(4))
    assert small.cached == 2  # the byte bound evicts before the count bound (4096)


def test_from_config_and_bad_parameters() -> None:
    b = GraphBuilder.from_config(GraphConfig(lookback=30, min_obs=20, top_k=7, threshold=0.4, cache_size=3,
                                             residual="beta", rank_by="rho"))
    assert b.params == (30, 20, 7, 0.4, "beta", "rho", 8) and b.cache_size == 3
    with pytest.raises(InputError, match="min_obs=50 exceeds graph.lookback=30"):
        GraphBuilder(lookback=30, min_obs=50)
    with pytest.raises(InputError, match="Fix"):
        GraphBuilder(top_k=0)
    with pytest.raises(InputError, match="sector_k=-1"):
        GraphBuilder(sector_k=-1)


def test_sector_k_adds_the_most_correlated_same_sector_peers_to_the_top_k() -> None:
    r, g = block_returns(num_dates=60, groups=3, per_group=6, seed=8)
    sector = np.arange(18) % 6  # listed sectors cut across the correlation blocks
    base = raw_builder(lookback=60, min_obs=40, top_k=2, threshold=0.3, cache_size=0)
    with_sector = raw_builder(lookback=60, min_obs=40, top_k=2, threshold=0.3, cache_size=0, sector_k=2)
    ei0, _ = base.build(r, sector, g)
    ei, ea = with_sector.build(r, sector, g)
    ref = loop_corr(r, min_obs=40)
    want = set(edge_set(ei0))
    for i in range(18):
        peers = [j for j in range(18) if j != i and sector[j] == sector[i]]
        for j in sorted(peers, key=lambda j: -ref[i, j])[:2]:  # most correlated first, no threshold
            want |= {(i, j), (j, i)}
    assert edge_set(ei) == want and edge_set(ei0) < want
    np.testing.assert_allclose(ea[:, 0].numpy(), ref[ei[0].numpy(), ei[1].numpy()], atol=1e-5)
    np.testing.assert_array_equal(ea[:, 1].numpy(), (sector[ei[0].numpy()] == sector[ei[1].numpy()]).astype(np.float32))
    assert with_sector.params != base.params  # part of the cache key


def test_sector_k_without_enough_history_or_sectors() -> None:
    b = raw_builder(lookback=10, min_obs=5, top_k=2, sector_k=8, cache_size=0)
    r = np.full((3, 4), np.nan)  # too short for any correlation: the sector peers alone, rho 0
    ei, ea = b.build(r, np.array([0, 0, 1, -1]), np.zeros(4, np.int64))
    assert edge_set(ei) == {(0, 1), (1, 0)} and (ea[:, 0] == 0).all() and (ea[:, 1] == 1).all()
    ei, _ = b.build(r, np.full(4, -1), np.zeros(4, np.int64))  # no sector known: nothing to add
    assert ei.shape == (2, 0)


def market_block_returns(seed: int = 7, beta_range: tuple[float, float] = (0.5, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """[120, 40] returns: a strong common market factor with spread-out betas, 4 weak sectors, noise."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(4), 10)
    beta = rng.uniform(*beta_range, g.size)
    market = 0.02 * rng.normal(size=(120, 1))
    sector = 0.006 * rng.normal(size=(120, 4))[:, g]
    r = beta * market + sector + 0.01 * rng.normal(size=(120, g.size))
    r[rng.random(r.shape) < 0.03] = np.nan
    return r, g


def _market_model_residual(r: np.ndarray) -> np.ndarray:
    """Per stock, the residual of an OLS of its returns on the cross-sectional mean (NaN kept)."""
    m = np.nanmean(r, axis=1)
    out = np.full_like(r, np.nan)
    for i in range(r.shape[1]):
        ok = ~np.isnan(r[:, i])
        beta = np.polyfit(m[ok], r[ok, i], 1)[0]
        out[ok, i] = r[ok, i] - beta * m[ok]
    return out


@pytest.mark.parametrize("residual", ["demean", "beta"])
def test_residual_correlations_match_the_per_pair_loop(residual: str) -> None:
    r, g = market_block_returns()
    b = raw_builder(lookback=120, min_obs=60, top_k=4, threshold=0.0, cache_size=0, residual=residual)
    ei, ea = b.build(r, np.full(g.size, -1), np.full(g.size, -1))
    resid = r - np.nanmean(r, axis=1, keepdims=True) if residual == "demean" else _market_model_residual(r)
    want = loop_corr(resid, min_obs=60)
    np.testing.assert_allclose(ea[:, 0].numpy(), want[ei[0].numpy(), ei[1].numpy()], atol=1e-5)


def _sector_precision(r: np.ndarray, g: np.ndarray, **kw: object) -> float:
    b = raw_builder(lookback=120, min_obs=60, top_k=4, threshold=0.0, cache_size=0, **kw)  # type: ignore[arg-type]
    src, dst = b.build(r, np.full(g.size, -1), np.full(g.size, -1))[0].numpy()
    return float((g[src] == g[dst]).mean())


def test_market_model_residual_recovers_sectors_a_market_factor_hides() -> None:
    r, g = market_block_returns(beta_range=(0.3, 1.7))
    raw = _sector_precision(r, g)
    demeaned = _sector_precision(r, g, residual="demean", rank_by="rho")
    resid = _sector_precision(r, g, residual="beta", rank_by="rho")
    # the market hides the sectors; demeaning leaves (beta - 1) x market, the beta residual does not
    assert resid > 0.9 and resid > raw + 0.1 and resid > demeaned + 0.1, (raw, demeaned, resid)


def test_rank_by_rho_drops_negatively_correlated_neighbours() -> None:
    r, g = block_returns(num_dates=60, groups=2, per_group=6, seed=8)
    r[:, 6:] = -r[:, :6] + 0.002 * np.random.default_rng(9).normal(size=(60, 6))  # group 1 mirrors group 0
    kw = dict(lookback=60, min_obs=40, top_k=3, threshold=0.2, cache_size=0)
    _, ea_abs = raw_builder(**kw, rank_by="abs").build(r, g, g)  # type: ignore[arg-type]
    _, ea_rho = raw_builder(**kw, rank_by="rho").build(r, g, g)  # type: ignore[arg-type]
    assert (ea_abs[:, 0] < 0).any() and (ea_rho[:, 0] > 0.2).all()


def test_residual_and_rank_are_part_of_the_cache_key_and_validated() -> None:
    keys = {GraphBuilder.from_config(GraphConfig(residual=res, rank_by=rk)).params
            for res in ("none", "demean", "beta") for rk in ("rho", "abs")}
    assert len(keys) == 6
    with pytest.raises(InputError, match="graph.residual"):
        GraphBuilder(residual="market")
    with pytest.raises(InputError, match="rank_by"):
        GraphBuilder(rank_by="spearman")


def test_build_runs_at_its_thread_count_and_restores_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    b = raw_builder(lookback=60, min_obs=40, top_k=3, num_threads=1, cache_size=0)
    real = b._build
    monkeypatch.setattr(b, "_build", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r, g = block_returns(seed=10)
        b.build(r, g, g)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
