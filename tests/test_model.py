"""The assembled ATFT_GAT_FAN: output contract, invariances, graph switch, errors, init, diagnose."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atft.cli import main as cli_main
from atft.config import Config, load
from atft.data.batch import DayBatch
from atft.errors import ConfigError, DataError, ShapeError
from atft.eval.spread import head_spread
from atft.horizons import Horizons
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.synth.batches import random_day_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread, restored after the module
F = 6  # features in the test batches
T = 10  # configs/smoke.yaml: sequence_length 10, hidden 16


def smoke(*overrides: str) -> Config:
    return load("smoke", list(overrides), apply_env=False)


def build(cfg: Config, seed: int = 0, num_features: int | None = F) -> ATFT_GAT_FAN:
    torch.manual_seed(seed)
    return ATFT_GAT_FAN.from_config(cfg, num_features)


def day(n: int, t: int = T, k: int = 3, seed: int = 0) -> DayBatch:
    return random_day_batch(n, t, F, 4, k=k, seed=seed)


def pack(batches: list[DayBatch]) -> DayBatch:
    """Several single-day batches as one block-diagonal multi-day batch."""
    offsets = torch.tensor([0] + [b.num_stocks for b in batches[:-1]]).cumsum(0)
    return DayBatch(
        features=torch.cat([b.features for b in batches]),
        targets=torch.cat([b.targets for b in batches]),
        target_mask=torch.cat([b.target_mask for b in batches]),
        edge_index=torch.cat([b.edge_index + o for b, o in zip(batches, offsets, strict=True)], dim=1),
        edge_attr=torch.cat([b.edge_attr for b in batches]),
        day_index=torch.cat([torch.full((b.num_stocks,), i) for i, b in enumerate(batches)]),
        codes=[c for b in batches for c in b.codes], dates=[b.dates[0] for b in batches])


def stacked(out: dict) -> torch.Tensor:
    """All quantile forecasts as ``[N, horizons * Q]``."""
    return torch.cat([out["predictions"][k] for k in sorted(out["predictions"])], dim=1)


@pytest.fixture(scope="module")
def model() -> ATFT_GAT_FAN:
    return build(smoke()).eval()


# ---------------------------------------------------------------- output contract
@settings(deadline=None, max_examples=12)
@given(n=st.integers(1, 12), t=st.integers(1, T), k=st.integers(0, 4), isolate=st.booleans(),
       seed=st.integers(0, 10_000))
def test_output_contract_finite_and_ordered(model: ATFT_GAT_FAN, n: int, t: int, k: int,
                                            isolate: bool, seed: int) -> None:
    b = day(n, t, k, seed)
    if isolate and b.edge_index.shape[1]:  # stock 0 loses every edge
        keep = (b.edge_index != 0).all(dim=0)
        b = dataclasses.replace(b, edge_index=b.edge_index[:, keep], edge_attr=b.edge_attr[keep])
    with torch.no_grad():
        out = model(b)
    Horizons.from_config(smoke()).check_keys(out["predictions"].keys())
    assert list(out["predictions"]) == ["horizon_1d", "horizon_5d", "horizon_10d", "horizon_20d"]
    assert set(out["point"]) == set(out["predictions"]) and "attention" not in out
    for key, q in out["predictions"].items():
        assert q.shape == (n, 3) and out["point"][key].shape == (n,)
        assert bool(torch.isfinite(q).all())
        assert bool((q[:, 1:] >= q[:, :-1]).all())
        torch.testing.assert_close(out["point"][key], q[:, 1])
    g = out["fusion_gate"]
    assert g.shape == (n,) and bool(((g > 0) & (g < 1)).all())


def test_attention_only_on_request(model: ATFT_GAT_FAN) -> None:
    with torch.no_grad():
        out = model(day(5), return_attention=True)
    att = out["attention"]
    assert att["temporal"].shape == (5, 2, T, T)
    assert att["variable_selection"].shape == (5, T, F)
    assert len(att["graph"]) == 2  # one (edge_index, alpha) per GAT layer


# ---------------------------------------------------------------- invariances
def test_stock_permutation_permutes_outputs(model: ATFT_GAT_FAN) -> None:
    b = day(9, seed=3)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(9)
    pb = dataclasses.replace(b, features=b.features[perm], targets=b.targets[perm],
                             target_mask=b.target_mask[perm], edge_index=inv[b.edge_index],
                             codes=[b.codes[i] for i in perm.tolist()])
    with torch.no_grad():
        out, pout = model(b), model(pb)
    torch.testing.assert_close(stacked(pout), stacked(out)[perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pout["fusion_gate"], out["fusion_gate"][perm], rtol=1e-4, atol=1e-5)


def test_packed_days_do_not_mix(model: ATFT_GAT_FAN) -> None:
    a, b, b2 = day(5, seed=1), day(6, seed=2), day(6, seed=7)
    with torch.no_grad():
        ab, ab2, alone = model(pack([a, b])), model(pack([a, b2])), model(a)
    torch.testing.assert_close(stacked(ab)[:5], stacked(ab2)[:5], rtol=0, atol=1e-6)
    torch.testing.assert_close(stacked(ab)[:5], stacked(alone), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(stacked(ab)[5:], stacked(ab2)[5:])


# ---------------------------------------------------------------- graph path switch
def test_graph_path_matters_when_enabled(model: ATFT_GAT_FAN) -> None:
    b = day(12, k=4)
    with torch.no_grad():
        diff = (stacked(model(b)) - stacked(model(b.without_edges()))).abs().max()
    assert float(diff) > 1e-3


@pytest.mark.parametrize("override", ["model.use_gat=false", "graph.enabled=false"])
def test_graph_path_off_is_bypassed_and_logged_once(override: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="atft.model.atft_gat_fan"):
        m = build(smoke(override)).eval()
    warnings = [r for r in caplog.records if r.name == "atft.model.atft_gat_fan"]
    assert len(warnings) == 1 and "bypassed" in warnings[0].getMessage()
    assert m.gat is None and m.fusion is None and m.parts()["gat"] is None
    b = day(12, k=4)
    with torch.no_grad():
        out = m(b)
        assert torch.equal(stacked(out), stacked(m(b.without_edges())))
    assert torch.equal(out["fusion_gate"], torch.ones(12))


def test_every_part_gets_gradient() -> None:
    """Every top-level part (issue: the FAN/SAN branch, the skips and gat_input were never checked)
    gets gradient; the FAN/SAN branch sits behind its zero-initialised ReZero scale, so it gets
    its first gradient at the second step, once the scale has moved."""
    from atft.model.atft_gat_fan import part_parameters

    m = build(smoke("model.linear_skip=true", "model.graph_skip=true")).train()
    parts = m.parts()
    assert list(parts) == ["vsn", "fan", "san", "tft", "gat", "fusion", "gat_input", "heads", "linear_skip",
                           "graph_skip", "norm_scale"]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    seen = {name: 0.0 for name in parts}
    for _ in range(2):
        opt.zero_grad()
        out = m(day(10, k=3))
        sum(q.square().sum() for q in out["predictions"].values()).backward()
        for name, part in parts.items():
            assert part is not None
            seen[name] += sum(float(p.grad.norm()) for p in part_parameters(part) if p.grad is not None)
        opt.step()
    assert all(v > 0 for v in seen.values()), seen


def test_adaptive_norm_switch() -> None:
    m = build(smoke("model.adaptive_norm=false"))
    assert m.fan is None and m.san is None
    on = build(smoke())
    assert on.fan is not None and on.san is not None
    assert len(list(m.parameters())) < len(list(on.parameters()))


def test_vsn_width_from_config_embedded_default_keeps_the_full_width_form() -> None:
    emb = ATFT_GAT_FAN.from_config(load("default", apply_env=False), 32)
    assert emb.vsn.feature_size == 16 and emb.vsn.project is None  # hidden 16 <= vsn_hidden: today's form
    prod = load("production", apply_env=False)
    assert 0 < prod.model.vsn_hidden < prod.model.hidden_size
    small = build(smoke("model.hidden_size=32", "model.vsn_hidden=8"))
    assert small.vsn.feature_size == 8 and small.vsn.project is not None
    assert small.vsn.feature_grns.fc2.weight.shape == (F, 8, 8)
    assert build(smoke("model.hidden_size=32", "model.vsn_hidden=0")).vsn.feature_size == 32
    with pytest.raises(ConfigError, match="vsn_hidden"):
        smoke("model.vsn_hidden=-1")


# ---------------------------------------------------------------- errors
def test_feature_count_mismatch_names_both_numbers(model: ATFT_GAT_FAN) -> None:
    b = random_day_batch(4, T, F + 1, 4, seed=0)
    with pytest.raises(ShapeError, match=rf"F={F + 1}.*F={F}"):
        model(b)
    with pytest.raises(ShapeError, match=rf"num_features={F}.*has {F + 2}"):
        build(smoke(f"model.num_features={F}"), num_features=F + 2)
    with pytest.raises(ShapeError, match="no feature count"):
        build(smoke(), num_features=None)
    assert build(smoke(f"model.num_features={F}"), num_features=None).num_features == F


def test_nan_features_are_a_data_error(model: ATFT_GAT_FAN) -> None:
    b = day(4)
    b.features[1, 2, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):  # values are checked where batches are built, not in forward
        model.validate(b)
    b = day(4)
    b.edge_attr[0, 1] = float("inf")
    with pytest.raises(DataError, match=r"batch edge_attr contain NaN/inf \(1 values\)"):
        b.validate()
    with pytest.raises(ShapeError, match=rf"F={F + 1}.*F={F}"):
        model.validate(dataclasses.replace(day(4), features=torch.zeros(4, T, F + 1)))


@pytest.mark.parametrize("overrides", [(), ("model.edge_dropout=0.2", "model.gat_dropout=0.1",
                                            "model.hidden_size=32", "model.vsn_hidden=8")])
def test_training_forward_and_backward_read_nothing_back_from_the_device(overrides: tuple[str, ...]) -> None:
    """The CPU stand-in of health_tests/test_cuda.py's sync-debug test: no op of a training forward
    or backward needs a value on the host (no ``.item()``, ``nonzero``, boolean-mask indexing)."""
    from atft.train.loss import MultiHorizonLoss
    from tests.host_sync import SyncSpy

    cfg = smoke(*overrides)
    m = build(cfg).train()
    b = day(12, k=4)
    b.edge_index[:, 0] = b.edge_index[0, 0]  # one input self-loop (replaced by GATv2's own)
    with SyncSpy() as spy:
        out = m(b)
    assert spy.ops == []
    total = MultiHorizonLoss.from_config(cfg)(out, b).total  # the loss reads its valid counts once
    with SyncSpy() as spy:
        total.backward()
    assert spy.ops == []
    with SyncSpy() as spy:  # the spy sees what it should: a validation reads values
        b.validate(F)
    assert "aten::_local_scalar_dense" in spy.ops


# ---------------------------------------------------------------- init
def test_same_seed_same_parameters_and_reset_gives_fresh_valid_model() -> None:
    cfg = smoke()
    m1, m2, m3 = build(cfg, seed=5), build(cfg, seed=5), build(cfg, seed=6)
    s1, s2, s3 = ({k: v.clone() for k, v in m.state_dict().items()} for m in (m1, m2, m3))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    with torch.no_grad():
        for p in m1.parameters():
            p.fill_(0.0)
    for m in (m1, m2, m3):  # reset re-draws EVERY parameter: the start state no longer matters
        torch.manual_seed(9)
        m.reset_parameters()
    for m in (m2, m3):
        assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m.parameters(), strict=True))
    assert not torch.equal(m1.state_dict()["tft.attention.out_proj.weight"], s1["tft.attention.out_proj.weight"])
    with torch.no_grad():
        out = m1.eval()(day(20))
    assert all(float(p.std()) > 1e-3 for p in out["point"].values())


def test_fresh_model_has_cross_sectional_spread_per_horizon() -> None:
    m = build(smoke())
    stats = head_spread(m, day(64, k=4, seed=11), m.quantiles)
    assert m.training  # head_spread restores the mode
    assert set(stats.horizons) == {"horizon_1d", "horizon_5d", "horizon_10d", "horizon_20d"}
    for s in stats.horizons.values():
        point = {"mean": s.point_mean, "std": s.point_std}
        assert s.shape == [64, 3]
        assert point["std"] > 0.001
        assert s.quantiles["q0.5"] == point
        assert s.quantiles["q0.2"]["mean"] < point["mean"] < s.quantiles["q0.8"]["mean"]
    assert 0.0 < stats.fusion_gate_mean < 1.0


def test_random_day_batch_is_seeded_and_knn_shaped() -> None:
    a, b, c = random_day_batch(10, 3, 2, 4, k=3, seed=1), random_day_batch(10, 3, 2, 4, k=3, seed=1), \
        random_day_batch(10, 3, 2, 4, k=3, seed=2)
    assert torch.equal(a.features, b.features) and torch.equal(a.edge_index, b.edge_index)
    assert not torch.equal(a.features, c.features)
    assert a.edge_index.shape == (2, 30) and a.edge_attr.shape == (30, 3)
    assert bool((a.edge_index[0] != a.edge_index[1]).all())
    torch.testing.assert_close(torch.bincount(a.edge_index[1], minlength=10), torch.full((10,), 3))
    a.validate(2, 4)
    assert random_day_batch(1, 3, 2, 4, k=3).edge_index.shape == (2, 0)


# ---------------------------------------------------------------- diagnose-head CLI
def test_diagnose_head_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["diagnose-head", "--config", "smoke", "model.num_features=4"]) == 0
    text = capsys.readouterr().out
    assert "horizon_20d" in text and "fusion gate mean" in text and "ok (all horizons)" in text
    assert cli_main(["diagnose-head", "--config", "smoke", "model.num_features=4",
                     "model.head_init_std=0.0"]) == 1
    assert "COLLAPSED" in capsys.readouterr().out
    assert cli_main(["diagnose-head", "--config", "smoke", "model.num_features=4",
                     "--threshold", "1e9"]) == 1


def assert_shifts_every_quantile(m: ATFT_GAT_FAN, base: dict, out: dict, shift: torch.Tensor,
                                 **tol: float) -> None:
    """``out`` = ``base`` with every quantile of horizon j moved by ``shift[:, j]``; point = median."""
    for j, key in enumerate(m.keys):
        torch.testing.assert_close(out["predictions"][key] - base["predictions"][key],
                                   shift[:, j : j + 1].expand(-1, len(m.quantiles)), **tol)
        torch.testing.assert_close(out["point"][key], out["predictions"][key][:, 1])
        assert (out["predictions"][key].diff(dim=1) > 0).all()


def test_linear_skip_shifts_every_quantile_by_a_linear_map_of_the_last_day() -> None:
    m = build(smoke("model.linear_skip=true")).eval()
    assert m.linear_skip is not None and float(m.linear_skip.weight.abs().sum()) == 0.0  # starts as a no-op
    b = day(9, k=3)
    with torch.no_grad():
        base = m(b)
        torch.nn.init.normal_(m.linear_skip.weight)
        torch.nn.init.normal_(m.linear_skip.bias)
        out = m(b)
        lin = b.features[:, -1] @ m.linear_skip.weight.T + m.linear_skip.bias  # [N, horizons]
    assert_shifts_every_quantile(m, base, out, lin)
    m.train()
    sum(q.square().sum() for q in m(b)["predictions"].values()).backward()
    assert float(m.linear_skip.weight.grad.norm()) > 0
    assert build(smoke()).linear_skip is None


def test_graph_skip_adds_an_anchored_linear_peer_effect_and_goes_with_the_graph() -> None:
    m = build(smoke("model.graph_skip=true")).eval()
    gs = m.graph_skip
    assert gs is not None and float(gs.direction.weight.abs().sum()) == 0.0  # starts as a no-op
    assert gs.anchor == m.keys.index("horizon_1d")  # the shortest horizon trains the direction
    b = day(9, k=3)
    with torch.no_grad():
        base = m(b)
        for p in (gs.direction.weight, gs.gate.weight, gs.loading, gs.bias):
            torch.nn.init.normal_(p)
        out = m(b)
        # reference: per-target loop over incoming edges, sigmoid edge gates, weighted mean
        x, (src, dst) = b.features[:, -1], b.edge_index
        w = torch.sigmoid(b.edge_attr @ gs.gate.weight.T + gs.gate.bias).squeeze(-1)
        mean = torch.zeros_like(x)
        for i in range(9):
            inc = dst == i
            if inc.any():
                mean[i] = (w[inc, None] * x[src[inc]]).sum(0) / w[inc].sum()
        d = mean @ gs.direction.weight.T  # [N, 1]
        loading = gs.loading.clone()
        loading[gs.anchor] = 1.0
        shift = d * loading + gs.bias  # [N, horizons]
    assert_shifts_every_quantile(m, base, out, shift, rtol=1e-4, atol=1e-5)
    # an isolated stock gets the biases only
    lone = b.without_edges()
    with torch.no_grad():
        torch.testing.assert_close(gs(lone.features[:, -1], lone.edge_index, lone.edge_attr),
                                   gs.bias.expand(9, -1))
    # only the anchor horizon trains the direction and the edge gate; the others train their loading
    m.train()
    others = [k for j, k in enumerate(m.keys) if j != gs.anchor]
    sum(m(b)["predictions"][k].square().sum() for k in others).backward()
    assert float(gs.direction.weight.grad.abs().sum()) == 0.0 and float(gs.gate.weight.grad.abs().sum()) == 0.0
    assert float(gs.loading.grad.abs().sum()) > 0
    m.zero_grad()
    m(b)["predictions"][m.keys[gs.anchor]].square().sum().backward()
    assert float(gs.direction.weight.grad.norm()) > 0 and float(gs.gate.weight.grad.norm()) > 0
    # the graph skip is part of the graph path: bypassing the GAT switches it off too
    assert build(smoke("model.graph_skip=true", "model.use_gat=false")).graph_skip is None
    assert build(smoke()).graph_skip is None


def test_graph_skip_sector_mean_adds_a_direction_on_the_same_sector_neighbour_mean() -> None:
    on = build(smoke("model.graph_skip=true", "model.graph_skip_sector_mean=true")).eval()
    gs = on.graph_skip
    assert gs is not None and gs.sector_direction is not None
    assert float(gs.sector_direction.weight.abs().sum()) == 0.0  # starts as a no-op
    assert build(smoke("model.graph_skip=true")).graph_skip.sector_direction is None  # off by default in code
    b = day(12, k=5)
    x, (src, dst), same = b.features[:, -1], b.edge_index, b.edge_attr[:, 1]
    assert 0 < int(same.sum()) < len(same)  # the batch has both kinds of edges
    with torch.no_grad():
        for p in (gs.direction.weight, gs.sector_direction.weight, gs.gate.weight, gs.loading, gs.bias):
            torch.nn.init.normal_(p)
        got = gs(x, b.edge_index, b.edge_attr)  # [N, horizons]
        # reference: plain mean over each stock's same-sector in-neighbours (0 if it has none)
        sector_mean = torch.zeros_like(x)
        for i in range(12):
            inc = (dst == i) & (same > 0)
            if inc.any():
                sector_mean[i] = x[src[inc]].mean(0)
        d = (gs.direction(gs.neighbour_mean(x, b.edge_index, b.edge_attr))
             + sector_mean @ gs.sector_direction.weight.T)  # [N, 1]
        loading = gs.loading.clone()
        loading[gs.anchor] = 1.0
        torch.testing.assert_close(got, d * loading + gs.bias, rtol=1e-4, atol=1e-5)
        # without same-sector edges (a panel without sector codes) the sector direction does nothing
        no_sector = b.edge_attr.clone()
        no_sector[:, 1] = 0.0
        before = gs(x, b.edge_index, no_sector)
        torch.nn.init.normal_(gs.sector_direction.weight)
        torch.testing.assert_close(gs(x, b.edge_index, no_sector), before)
    # like the gated direction, the sector direction is trained by the anchor horizon only
    on.train()
    others = [k for j, k in enumerate(on.keys) if j != gs.anchor]
    sum(on(b)["predictions"][k].square().sum() for k in others).backward()
    assert float(gs.sector_direction.weight.grad.abs().sum()) == 0.0
    on.zero_grad()
    on(b)["predictions"][on.keys[gs.anchor]].square().sum().backward()
    assert float(gs.sector_direction.weight.grad.norm()) > 0
