"""Quality gates (slow): the recovery plan's 3-epoch checkpoint and 10-epoch criteria.

Thresholds from ``health`` in the config (defaults: the recovery plan). On the embedded
synthetic default also IC@1d >= health.oracle_fraction x the oracle IC of the sidecar.
"""

from __future__ import annotations

import dataclasses

import pytest

from atft.health.train_checks import checkpoint_checks, quality_gate
from atft.horizons import Horizons

pytestmark = pytest.mark.slow


def _fit(cfg, prepared, tmp_path_factory, epochs: int):
    from atft.train.fit import fit

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, max_epochs=epochs, run_dir=str(tmp_path_factory.mktemp("runs")),
        log_dir=str(tmp_path_factory.mktemp("logs")), progress=False))
    return fit(cfg, prepared, run_id=f"health_{epochs}ep")


def _oracle_same_rows(cfg, data_path, res, horizons):
    """Oracle IC on exactly the test rows of the run (None when the data has no truth file)."""
    import polars as pl

    from atft.synth.cache import truth_path
    from atft.synth.oracle import oracle_on_predictions

    truth = truth_path(data_path)
    if not truth.exists():
        return None
    frame = pl.read_parquet(res.run_dir / "predictions_test.parquet")
    same = oracle_on_predictions(frame, truth, horizons, min_stocks=cfg.data.min_stocks)
    return {k: v["oracle_ic"] for k, v in same.items()}


def _history_artifact(health, name, res, horizons):
    health.artifact("history", {"run": name, "epochs": res.history,
                                "test": {k: res.final["test"][k] for k in horizons.keys}})


def test_three_epoch_checkpoint(atft_config, atft_prepared, tmp_path_factory, health):
    horizons = Horizons.from_config(atft_config)
    res = _fit(atft_config, atft_prepared, tmp_path_factory, 3)
    _history_artifact(health, "3 epochs", res, horizons)
    health.check(checkpoint_checks(res.history, res.final, horizons, atft_config.health,
                                   atft_config.health.ic_3ep))


def test_ten_epoch_quality_gate(atft_config, atft_prepared, atft_data_path, tmp_path_factory, health):
    horizons = Horizons.from_config(atft_config)
    res = _fit(atft_config, atft_prepared, tmp_path_factory, 10)
    _history_artifact(health, "10 epochs", res, horizons)
    health.check(quality_gate(res.history, res.final, horizons, atft_config.health,
                              _oracle_same_rows(atft_config, atft_data_path, res, horizons)))
