"""Model heads, horizon keys, one training step, GAT not bypassed, mini-train (smoke).

All on a real day batch of the dataset under test, through the training pipeline itself.
"""

from __future__ import annotations

import pytest
import torch

from atft.health.model_checks import (
    check_gat_effect,
    check_head_spread,
    check_horizon_keys,
    check_training_step,
    mini_train,
)
from atft.horizons import Horizons

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def horizons(atft_config) -> Horizons:
    return Horizons.from_config(atft_config)


@pytest.fixture(scope="module")
def day_batch(atft_prepared):
    return atft_prepared.day_batch("val")


@pytest.fixture
def loss_fn(atft_config):
    from atft.train.loss import MultiHorizonLoss

    return MultiHorizonLoss.from_config(atft_config)


def test_horizon_keys_agree(atft_model, day_batch, loss_fn, horizons, atft_data_path, atft_config, health):
    from atft.data.source import scan
    from atft.train.step import metrics_from_predictions, predict

    columns = list(scan(atft_data_path).collect_schema().names())
    with torch.no_grad():
        out = atft_model(day_batch)
        loss_keys = list(loss_fn(out, day_batch).per_horizon)
    frame, _, _ = predict(atft_model, [day_batch], horizons)
    metric_keys = list(metrics_from_predictions(frame, horizons, min_stocks=2)[0])
    health.check(check_horizon_keys(horizons, columns, out, loss_keys, metric_keys))


def test_head_spread_on_real_batch(atft_model, day_batch, horizons, atft_config, atft_prepared, health):
    results, samples = check_head_spread(atft_model, day_batch, horizons, atft_config.health.min_head_std,
                                         atft_prepared.normalizer.target_scale)
    health.artifact("predictions", {"source": "fresh model, one validation day", "values": samples})
    health.check(results)


def test_one_training_step(atft_model, day_batch, loss_fn, allow_gat_bypass, health):
    health.check(check_training_step(atft_model, day_batch, loss_fn, allow_gat_bypass))


def test_gat_not_bypassed(atft_model, day_batch, horizons, allow_gat_bypass, health):
    r = check_gat_effect(atft_model, day_batch, horizons)
    if allow_gat_bypass and not r.passed:
        r.passed, r.message = True, "GAT bypass allowed by --atft-allow-gat-bypass"
    health.check(r)


def test_mini_train(atft_model, atft_prepared, loss_fn, horizons, atft_config, health):
    batches = [atft_prepared.day_batch("train", i) for i in range(3)]
    health.check(mini_train(atft_model, batches, loss_fn, steps=atft_config.health.mini_train_steps,
                            lr=atft_config.train.lr, horizons=horizons,
                            min_std=atft_config.health.min_head_std,
                            scale=atft_prepared.normalizer.target_scale))
