"""DayBatchLoader (whole days, packing, windows, graphs) and the data pipeline ``prepare``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from atft.config import Config
from atft.data.loader import DayBatchLoader
from atft.data.normalize import NormalizedPanel, Normalizer
from atft.data.panel import Panel
from atft.errors import InputError
from atft.train.prepare import prepare
from tests.reference import raw_builder

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread, restored after the module
D0 = dt.date(2022, 1, 3)


def tiny(valid: np.ndarray, returns: np.ndarray | None = None, sector: np.ndarray | None = None
         ) -> tuple[Panel, NormalizedPanel]:
    """Panel + 'normalized' arrays with identifiable values: features[d, n, f] = 100 d + 10 n + f."""
    d, n = valid.shape
    feats = (100 * np.arange(d)[:, None, None] + 10 * np.arange(n)[None, :, None]
             + np.arange(2)[None, None, :]).astype(np.float32)  # [D, N, 2]
    raw = np.where(valid[..., None], feats[..., :1] / 1000.0, np.nan).astype(np.float32)  # [D, N, 1]
    raw[-1, 0, 0] = np.nan  # a missing target at the last date
    panel = Panel(features=feats, targets=raw, valid=valid,
                  returns=np.zeros((d, n), np.float32) if returns is None else returns.astype(np.float32),
                  codes=[f"C{i}" for i in range(n)], dates=[D0 + dt.timedelta(days=i) for i in range(d)],
                  feature_names=["a", "b"], target_names=["feat_ret_1d"], horizons=[1],
                  sector=np.full(n, -1) if sector is None else sector, market=np.full(n, -1))
    return panel, NormalizedPanel(features=feats, targets=raw * 10, raw_targets=raw)


def test_single_day_window_values_observed_and_targets() -> None:
    valid = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1]], bool)  # [5, 3]
    panel, norm = tiny(valid)
    loader = DayBatchLoader(panel, norm, np.arange(5), seq_len=3, batch_size=100)
    b = loader.day(4)  # date 4: rows 0, 1, 2; window dates 2, 3, 4
    assert b.features.shape == (3, 3, 2) and b.codes == ["C0", "C1", "C2"] and b.date == D0 + dt.timedelta(days=4)
    np.testing.assert_array_equal(b.features[1, :, 0].numpy(), [210, 310, 410])  # stock 1 at dates 2, 3, 4
    np.testing.assert_array_equal(b.features[2, :, 1].numpy(), [221, 321, 421])
    np.testing.assert_array_equal(b.observed.numpy(), [[True, False, True], [True, True, True], [True, True, True]])
    np.testing.assert_allclose(b.raw_targets[:, 0].numpy(), [np.nan, 0.41, 0.42], rtol=1e-6)
    np.testing.assert_allclose(b.targets[:, 0].numpy(), [np.nan, 4.1, 4.2], rtol=1e-6)  # NaN kept, not 0
    np.testing.assert_array_equal(b.target_mask[:, 0].numpy(), [False, True, True])
    assert b.edge_index.shape == (2, 0) and b.edge_attr.shape == (0, 3)
    b.validate(num_features=2, num_horizons=1)


def test_invalid_stock_is_not_a_row() -> None:
    valid = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
    panel, norm = tiny(valid)
    b = DayBatchLoader(panel, norm, np.arange(3), seq_len=1, batch_size=100).day(1)
    assert b.codes == ["C0", "C2"] and b.features[:, 0, 0].tolist() == [100, 120]


def test_window_before_first_date_is_zero_padded() -> None:
    panel, norm = tiny(np.ones((4, 2), bool))
    b = DayBatchLoader(panel, norm, np.arange(4), seq_len=3, batch_size=100).day(0)
    np.testing.assert_array_equal(b.features[1, :, 0].numpy(), [0, 0, 10])
    np.testing.assert_array_equal(b.observed.numpy(), [[False, False, True]] * 2)


def test_packing_whole_days_up_to_batch_size() -> None:
    valid = np.zeros((6, 4), bool)
    for d, k in enumerate([3, 2, 3, 4, 1, 1]):
        valid[d, :k] = True
    panel, norm = tiny(valid)
    loader = DayBatchLoader(panel, norm, np.arange(6), seq_len=2, batch_size=3)
    batches = list(loader)
    # sizes 3 | 2 | 3 | 4 (a day larger than batch_size alone) | 1+1
    assert [b.meta["date_indices"] for b in batches] == [[0], [1], [2], [3], [4, 5]]
    assert len(loader) == 5
    loader5 = DayBatchLoader(panel, norm, np.arange(6), seq_len=2, batch_size=5)
    assert [b.meta["date_indices"] for b in loader5] == [[0, 1], [2], [3, 4], [5]]
    last = list(loader5)[2]
    np.testing.assert_array_equal(last.day_index.numpy(), [0, 0, 0, 0, 1])
    assert last.dates == [D0 + dt.timedelta(days=3), D0 + dt.timedelta(days=4)] and last.num_stocks == 5


def test_min_stocks_skips_and_counts() -> None:
    valid = np.zeros((5, 4), bool)
    for d, k in enumerate([4, 1, 4, 2, 4]):
        valid[d, :k] = True
    panel, norm = tiny(valid)
    loader = DayBatchLoader(panel, norm, np.arange(1, 5), seq_len=1, batch_size=100, min_stocks=3)
    assert loader.skipped_dates == 2 and loader.dates.tolist() == [2, 4]
    with pytest.raises(InputError, match="serves 2 dates"):
        loader.day(2)


def test_shuffle_is_seeded_and_changes_with_epoch() -> None:
    panel, norm = tiny(np.ones((30, 2), bool))

    def order(seed: int, epoch: int) -> list[int]:
        ld = DayBatchLoader(panel, norm, np.arange(30), seq_len=1, batch_size=2, shuffle=True, seed=seed)
        ld.set_epoch(epoch)
        return [b.meta["date_indices"][0] for b in ld]

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == list(range(30)) and order(0, 0) != list(range(30))
    assert order(0, 1) != order(0, 0) and order(1, 0) != order(0, 0)


def test_graphs_are_per_day_offset_and_block_diagonal() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 2))
    g = np.array([0, 0, 0, 1, 1, 1])
    returns = f[:, g] + 0.3 * rng.normal(size=(40, 6))
    valid = np.ones((40, 6), bool)
    valid[35, 0] = False
    panel, norm = tiny(valid, returns=returns, sector=g)
    builder = raw_builder(lookback=20, min_obs=15, top_k=2, threshold=0.3)
    loader = DayBatchLoader(panel, norm, np.array([34, 35, 36]), seq_len=2, batch_size=12, graph_builder=builder)
    b, last = list(loader)  # 6 + 5 stocks fit in 12, the third day (6) does not
    assert b.meta["date_indices"] == [34, 35] and last.meta["date_indices"] == [36]
    b.validate(num_features=2)  # raises on an edge across days or an index out of range
    fresh = raw_builder(lookback=20, min_obs=15, top_k=2, threshold=0.3, cache_size=0)
    ei0, _ = fresh.for_date(panel, 34, np.arange(6))
    ei1, ea1 = fresh.for_date(panel, 35, np.array([1, 2, 3, 4, 5]))
    want = torch.cat([ei0, ei1 + 6], dim=1)
    assert torch.equal(b.edge_index, want) and ei0.numel() and ei1.numel()
    assert torch.equal(b.edge_attr[ei0.shape[1]:], ea1)


def test_bad_inputs() -> None:
    panel, norm = tiny(np.ones((3, 2), bool))
    with pytest.raises(InputError, match="date indices outside"):
        DayBatchLoader(panel, norm, np.array([5]), seq_len=1, batch_size=4)
    with pytest.raises(InputError, match="must be >= 1"):
        DayBatchLoader(panel, norm, np.arange(3), seq_len=0, batch_size=4)


# ---------------------------------------------------------------- pipeline


def write_long(path: Path, n_stocks: int = 24, n_days: int = 90, seed: int = 0) -> Path:
    """A small random long panel: Code/Date/sector, 3 features, compounded forward targets."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n_stocks) % 3
    daily = 0.01 * (rng.normal(size=(n_days + 5, 3))[:, groups] + 0.5 * rng.normal(size=(n_days + 5, n_stocks)))
    cs = np.vstack([np.zeros((1, n_stocks)), np.cumsum(np.log1p(daily), axis=0)])  # [D+6, N]
    cols: dict[str, object] = {
        "Code": np.tile([f"K{i:03d}" for i in range(n_stocks)], n_days),
        "Date": pl.date_range(D0, D0 + dt.timedelta(days=n_days - 1), eager=True).gather(
            np.repeat(np.arange(n_days), n_stocks)),
        "sector": np.tile([f"S{g:02d}" for g in groups], n_days),
    }
    for k in range(3):
        cols[f"x{k:03d}"] = rng.normal(size=n_days * n_stocks) * (k + 1)
    for h in (1, 5):
        fwd = np.exp(cs[h:h + n_days] - cs[:n_days]) - 1.0
        fwd[n_days - h:] = np.nan  # last h rows unknown
        cols[f"feat_ret_{h}d"] = fwd.ravel()
    pl.DataFrame(cols).write_parquet(path)
    return path


def _cfg(**graph: object) -> Config:
    cfg = Config()
    cfg.data.horizons = [1, 5]
    cfg.data.sequence_length = 4
    cfg.data.min_stocks = 5
    cfg.data.val_fraction = 0.2
    cfg.data.test_fraction = 0.2
    cfg.train.batch_size = 50
    cfg.graph.lookback = 20
    cfg.graph.min_obs = 15
    for k, v in graph.items():
        setattr(cfg.graph, k, v)
    return cfg


def test_prepare_split_normalizer_and_loaders(tmp_path: Path) -> None:
    prep = prepare(_cfg(), str(write_long(tmp_path / "p.parquet")))
    s = prep.split
    # warmup = max(sequence_length - 1, graph.min_obs): every split date has a full graph window
    assert s.embargo == 5 and s.train[0] == max(prep.cfg.data.sequence_length - 1, prep.cfg.graph.min_obs)
    assert s.train[-1] + 5 < s.val[0] and s.val[-1] + 5 < s.test[0]
    assert prep.num_features == 3 and prep.graph_builder is not None
    ref = Normalizer.from_config(prep.cfg).fit(prep.panel, s.train)
    assert ref.state_dict() == prep.normalizer.state_dict()  # fit on train dates only
    train, val = prep.loader("train"), prep.loader("val")
    assert train.shuffle and not val.shuffle and val.graph_builder is train.graph_builder
    assert len(list(train)) == len(train) and len(train) > 1
    b = next(iter(val))
    b.validate(num_features=3, num_horizons=2)
    assert b.num_stocks <= 50 and b.edge_index.shape[1] > 0
    # evaluation batches come from the same transform as training (failure mode 6)
    d = s.val[0]
    want = ref.transform_features(prep.panel.features[d - 3:d + 1])[:, prep.panel.valid[d]]  # [T, n, F]
    np.testing.assert_array_equal(b.features[:want.shape[1]].numpy(), want.transpose(1, 0, 2))
    one = prep.day_batch("test", 1)
    assert one.num_days == 1 and one.date == prep.panel.dates[s.test[1]]
    with pytest.raises(InputError, match="unknown split"):
        prep.loader("validation")


@pytest.mark.parametrize("switch", ["graph.enabled", "model.use_gat"])
def test_graph_off_means_no_edges_in_every_split(tmp_path: Path, switch: str) -> None:
    cfg = _cfg()
    section, name = switch.split(".")
    setattr(getattr(cfg, section), name, False)
    prep = prepare(cfg, str(write_long(tmp_path / "p.parquet")))
    assert prep.graph_builder is None
    for split in ("train", "val", "test"):
        assert next(iter(prep.loader(split))).edge_index.shape == (2, 0)
