"""MultiHorizonLoss: hand-computed pinball, NaN masking, horizon contract, per-date corr, grads."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import torch

from atft.config import Config
from atft.data.batch import DayBatch
from atft.errors import ConfigError, HorizonMismatchError, ShapeError
from atft.horizons import Horizons
from atft.train.loss import LossOutput, MultiHorizonLoss

QS = [0.1, 0.5, 0.9]
NAN = float("nan")


def make_batch(targets: list[list[float]], day_index: list[int] | None = None) -> DayBatch:
    """A DayBatch carrying only what the loss reads (targets, mask, day_index, dates)."""
    y = torch.tensor(targets, dtype=torch.float64)
    n = y.shape[0]
    di = torch.tensor(day_index if day_index is not None else [0] * n, dtype=torch.long)
    n_days = int(di.max()) + 1 if n else 1
    return DayBatch(
        features=torch.zeros(n, 1, 1),
        targets=y,
        target_mask=~torch.isnan(y),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_attr=torch.zeros(0, 3),
        day_index=di,
        codes=[f"c{i}" for i in range(n)],
        dates=[dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(n_days)],
    )


def out_of(preds: dict[str, torch.Tensor]) -> dict[str, object]:
    """The model's output layout: predictions plus the point forecast and a diagnostic."""
    return {"predictions": preds, "point": {k: v[:, 1] for k, v in preds.items()},
            "fusion_gate": torch.zeros(next(iter(preds.values())).shape[0])}


def test_pinball_matches_hand_computation() -> None:
    # y = 1:  e = 1-0 = 1 -> 0.1*1 = 0.1;  e = 1-0.5 -> 0.5*0.5 = 0.25;  e = 1-2 = -1 -> 0.1*1 = 0.1
    # y = -1: e = -1+2 = 1 -> 0.1;         e = -1-0 -> 0.5*1 = 0.5;      e = -1-1 = -2 -> 0.1*2 = 0.2
    # mean over 2 rows x 3 quantiles = 1.25 / 6
    loss = MultiHorizonLoss(Horizons((1,)), QS)
    pred = torch.tensor([[0.0, 0.5, 2.0], [-2.0, 0.0, 1.0]], dtype=torch.float64)
    lo = loss(out_of({"horizon_1d": pred}), make_batch([[1.0], [-1.0]]))
    assert isinstance(lo, LossOutput)
    assert lo.total.item() == pytest.approx(1.25 / 6, abs=1e-12)
    assert lo.pinball.item() == pytest.approx(1.25 / 6, abs=1e-12)
    assert lo.per_horizon["horizon_1d"].item() == pytest.approx(1.25 / 6, abs=1e-12)
    assert lo.n_valid == 2 and lo.n_valid_per_horizon == {"horizon_1d": 2}


def test_nan_targets_are_masked_not_zero_filled() -> None:
    torch.manual_seed(0)
    loss = MultiHorizonLoss(Horizons((1, 5)), QS, corr_weight=0.5)
    y = torch.randn(9, 2, dtype=torch.float64)
    days = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    nan_rows = [1, 6]
    y_nan = y.clone()
    y_nan[nan_rows] = NAN
    p = torch.randn(9, 2, 3, dtype=torch.float64)
    keep = [i for i in range(9) if i not in nan_rows]
    full = loss(out_of({"horizon_1d": p[:, 0], "horizon_5d": p[:, 1]}),
                make_batch(y_nan.tolist(), days))
    sub = loss(out_of({"horizon_1d": p[keep, 0], "horizon_5d": p[keep, 1]}),
               make_batch(y[keep].tolist(), [days[i] for i in keep]))
    assert full.total.item() == pytest.approx(sub.total.item(), abs=1e-12)
    assert full.corr.item() == pytest.approx(sub.corr.item(), abs=1e-12)
    assert full.n_valid == 14
    # zero-filling the NaN targets would change the loss: the test can tell the difference
    zero = loss(out_of({"horizon_1d": p[:, 0], "horizon_5d": p[:, 1]}),
                make_batch(torch.nan_to_num(y_nan, nan=0.0).tolist(), days))
    assert abs(zero.total.item() - full.total.item()) > 1e-6


def test_nan_targets_give_finite_gradients() -> None:
    loss = MultiHorizonLoss(Horizons((1,)), QS, corr_weight=1.0)
    p = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    lo = loss(out_of({"horizon_1d": p}), make_batch([[0.1], [NAN], [-0.2], [0.3]]))
    lo.total.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    assert torch.equal(p.grad[1], torch.zeros(3, dtype=torch.float64))  # masked row: no signal


def test_top_level_dict_passed_as_predictions_raises_naming_missing_keys() -> None:
    loss = MultiHorizonLoss(Horizons((1, 5)), QS)
    preds = {"horizon_1d": torch.zeros(2, 3), "horizon_5d": torch.zeros(2, 3)}
    batch = make_batch([[0.1, 0.2], [0.3, 0.4]])
    # failure mode 1: the whole output dict where the horizon dict belongs
    with pytest.raises(HorizonMismatchError) as e:
        loss({"predictions": out_of(preds)}, batch)
    msg = str(e.value)
    assert "missing ['horizon_1d', 'horizon_5d']" in msg and "'predictions'" in msg
    # the inverse mistake: the horizon dict itself, which has no 'predictions' entry
    with pytest.raises(HorizonMismatchError, match=r"missing \['predictions'\].*not output\['predictions'\]"):
        loss(preds, batch)


def test_key_drift_raises_with_symmetric_difference() -> None:
    loss = MultiHorizonLoss(Horizons((1,)), QS)
    with pytest.raises(HorizonMismatchError) as e:
        loss(out_of({"horizon_1": torch.zeros(2, 3)}), make_batch([[0.1], [0.2]]))
    assert "missing ['horizon_1d']" in str(e.value) and "unexpected ['horizon_1']" in str(e.value)


def test_gradient_reaches_predictions_and_is_nonzero() -> None:
    torch.manual_seed(1)
    loss = MultiHorizonLoss(Horizons((1, 5)), QS, corr_weight=0.3)
    p1 = torch.randn(6, 3, requires_grad=True)
    p5 = torch.randn(6, 3, requires_grad=True)
    batch = make_batch(torch.randn(6, 2).tolist(), [0, 0, 0, 1, 1, 1])
    lo = loss(out_of({"horizon_1d": p1, "horizon_5d": p5}), batch)
    lo.total.backward()
    for p in (p1, p5):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_corr_term_is_one_minus_pearson_per_date() -> None:
    rng = np.random.default_rng(3)
    day = np.array([0] * 4 + [1] * 5 + [2])  # day 2 has one stock: excluded from the mean
    y = rng.normal(size=10)
    med = rng.normal(size=10)
    preds = np.stack([med - 1.0, med, med + 1.0], axis=1)
    loss = MultiHorizonLoss(Horizons((1,)), QS, pinball_weight=0.0, corr_weight=1.0)
    lo = loss(out_of({"horizon_1d": torch.tensor(preds)}),
              make_batch(y[:, None].tolist(), day.tolist()))
    r0 = np.corrcoef(med[day == 0], y[day == 0])[0, 1]
    r1 = np.corrcoef(med[day == 1], y[day == 1])[0, 1]
    expected = ((1 - r0) + (1 - r1)) / 2
    assert lo.corr.item() == pytest.approx(expected, abs=1e-12)
    assert lo.total.item() == pytest.approx(expected, abs=1e-12)


def test_corr_constant_prediction_day_scores_one_with_finite_grad() -> None:
    loss = MultiHorizonLoss(Horizons((1,)), QS, pinball_weight=0.0, corr_weight=1.0)
    p = torch.full((4, 3), 0.3, dtype=torch.float64, requires_grad=True)
    lo = loss(out_of({"horizon_1d": p}), make_batch([[0.1], [0.4], [-0.2], [0.0]]))
    assert lo.total.item() == pytest.approx(1.0, abs=1e-9)
    lo.total.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0


def test_horizon_weights_are_normalized() -> None:
    torch.manual_seed(2)
    preds = {"horizon_1d": torch.randn(5, 3, dtype=torch.float64),
             "horizon_5d": torch.randn(5, 3, dtype=torch.float64)}
    batch = make_batch(torch.randn(5, 2).tolist())
    h = Horizons((1, 5))
    a = MultiHorizonLoss(h, QS, horizon_weights=[3.0, 1.0])(out_of(preds), batch)
    b = MultiHorizonLoss(h, QS, horizon_weights=[0.75, 0.25])(out_of(preds), batch)
    eq = MultiHorizonLoss(h, QS, horizon_weights=[])(out_of(preds), batch)
    l1, l5 = a.per_horizon["horizon_1d"].item(), a.per_horizon["horizon_5d"].item()
    assert a.total.item() == pytest.approx(0.75 * l1 + 0.25 * l5, abs=1e-12)
    assert b.total.item() == pytest.approx(a.total.item(), abs=1e-12)
    assert eq.total.item() == pytest.approx(0.5 * l1 + 0.5 * l5, abs=1e-12)


def test_all_nan_batch_keeps_grad_path_and_flags_n_valid_zero() -> None:
    loss = MultiHorizonLoss(Horizons((1, 5)), QS, corr_weight=0.2)
    p1 = torch.randn(3, 3, requires_grad=True)
    p5 = torch.randn(3, 3, requires_grad=True)
    lo = loss(out_of({"horizon_1d": p1, "horizon_5d": p5}), make_batch([[NAN, NAN]] * 3))
    assert lo.n_valid == 0
    assert lo.total.item() == 0.0
    assert lo.total.requires_grad and lo.total.grad_fn is not None
    lo.total.backward()
    assert p1.grad is not None and torch.equal(p1.grad, torch.zeros(3, 3))


def test_horizon_without_targets_contributes_zero_but_keeps_grad_path() -> None:
    loss = MultiHorizonLoss(Horizons((1, 5)), QS)
    p1 = torch.tensor([[0.0, 0.5, 2.0], [-2.0, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    p5 = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    lo = loss(out_of({"horizon_1d": p1, "horizon_5d": p5}), make_batch([[1.0, NAN], [-1.0, NAN]]))
    assert lo.per_horizon["horizon_5d"].item() == 0.0
    assert lo.per_horizon["horizon_5d"].grad_fn is not None
    assert lo.total.item() == pytest.approx(0.5 * 1.25 / 6, abs=1e-12)
    assert lo.n_valid_per_horizon == {"horizon_1d": 2, "horizon_5d": 0}


def test_from_config_reads_train_and_model_sections() -> None:
    cfg = Config()
    cfg.train.horizon_weights = [4.0, 2.0, 1.0, 1.0]
    cfg.train.corr_weight = 0.25
    loss = MultiHorizonLoss.from_config(cfg)
    assert loss.keys == ["horizon_1d", "horizon_5d", "horizon_10d", "horizon_20d"]
    assert loss.horizon_weights.tolist() == [0.5, 0.25, 0.125, 0.125]
    assert loss.quantiles.tolist() == [0.2, 0.5, 0.8] and loss.median_index == 1
    assert loss.corr_weight == 0.25 and loss.pinball_weight == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"quantiles": [0.1, 0.9]}, {"quantiles": [0.5, 0.2]}, {"horizon_weights": [1.0]},
     {"horizon_weights": [1.0, -1.0]}, {"horizon_weights": [0.0, 0.0]}, {"corr_weight": -1.0}],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"quantiles": QS, **kwargs}
    with pytest.raises(ConfigError, match="Fix"):
        MultiHorizonLoss(Horizons((1, 5)), **args)  # type: ignore[arg-type]


def test_prediction_shape_mismatch_raises() -> None:
    loss = MultiHorizonLoss(Horizons((1,)), QS)
    with pytest.raises(ShapeError, match=r"\[2, 3\]"):
        loss(out_of({"horizon_1d": torch.zeros(2, 2)}), make_batch([[0.1], [0.2]]))
    with pytest.raises(ShapeError, match="H=1"):
        loss(out_of({"horizon_1d": torch.zeros(2, 3)}), make_batch([[0.1, 0.1], [0.2, 0.2]]))


def test_bfloat16_predictions_are_computed_in_float32() -> None:
    loss = MultiHorizonLoss(Horizons((1,)), QS)
    pred = torch.tensor([[0.0, 0.5, 2.0], [-2.0, 0.0, 1.0]], dtype=torch.bfloat16)
    lo = loss(out_of({"horizon_1d": pred}), make_batch([[1.0], [-1.0]]))
    assert lo.total.dtype == torch.float32
    assert math.isclose(lo.total.item(), 1.25 / 6, abs_tol=1e-6)
