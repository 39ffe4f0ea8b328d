"""Quality gates (slow): the recovery plan's 3-epoch checkpoint and 10-epoch criteria.

Each gate reads a real training run of atft's model on the data under test (the ``fit_3ep`` /
``fit_10ep`` resources: ``atft.train.fit.fit`` at the configured settings); on a synthetic panel
the 10-epoch gate also requires IC@1d >= ``health.oracle_fraction`` x the oracle's IC on the same
test rows. On the embedded default the gates train on the panel of ``health.gate_seed``, a seed
no default was tuned on (``gate_dataset``), not on the smoke checks' panel. The planted faults are
runs that learnt nothing (constant predictions) or overfit.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl

from atft.config import Config
from atft.health.context import Artifacts, HealthContext
from atft.health.registry import health_check
from atft.health.result import CheckResult
from atft.health.train_checks import checkpoint_checks, quality_gate
from atft.horizons import Horizons


def planted_run(train: list[float], val: list[float], ic: float, sharpe: float, horizons: Horizons,
                yhat_std: float = 0.01) -> SimpleNamespace:
    """A finished run's record (history, final test metrics) with the given figures."""
    hist = [{"epoch": i, "train/total_loss": a, "val/total_loss": b} for i, (a, b) in enumerate(zip(train, val, strict=True))]
    block = {"ic": ic, "sharpe": sharpe, "yhat_std": yhat_std, "n_dates": 100, "ic_ci95": [ic - 0.01, ic + 0.01]}
    return SimpleNamespace(history=hist, final={"test": {k: dict(block) for k in horizons.keys}}, run_dir=None)


def _constant_predictions(ctx: HealthContext) -> HealthContext:
    return ctx.replace(fit_3ep=planted_run([5e-4] * 3, [5e-4] * 3, float("nan"), float("nan"),
                                           ctx.resolve("horizons"), yhat_std=0.0))


def _history(artifacts: Artifacts, name: str, run: Any, horizons: Horizons) -> None:
    artifacts.add("history", {"run": name, "epochs": run.history,
                              "test": {k: run.final["test"][k] for k in horizons.keys}})


@health_check(area="quality", marker="slow", fault=_constant_predictions, atft_only=True)
def three_epoch_checkpoint(fit_3ep: Any, horizons: Horizons, cfg: Config, artifacts: Artifacts) -> list[CheckResult]:
    """After 3 epochs: loss > 0, yhat_std > health.min_head_std on every horizon, test IC@1d > health.ic_3ep."""
    _history(artifacts, "3 epochs", fit_3ep, horizons)
    return checkpoint_checks(fit_3ep.history, fit_3ep.final, horizons, cfg.health, cfg.health.ic_3ep)


def _overfit(ctx: HealthContext) -> HealthContext:
    return ctx.replace(fit_10ep=planted_run([0.5, 0.4, 0.3, 0.2, 0.1], [0.5, 0.52, 0.55, 0.6, 0.7], 0.02, 0.05,
                                            ctx.resolve("horizons")))


def oracle_on_run(dataset: Any, run: Any, horizons: Horizons, cfg: Config) -> dict[str, float] | None:
    """The oracle's IC on exactly the run's test rows (None without a synthetic truth file)."""
    from atft.synth.cache import truth_path
    from atft.synth.oracle import oracle_on_predictions

    if run.run_dir is None or isinstance(dataset, pl.DataFrame) or not Path(str(dataset)).is_file():
        return None
    truth = truth_path(str(dataset))
    if not truth.exists():
        return None
    frame = pl.read_parquet(Path(run.run_dir) / "predictions_test.parquet")
    return {k: v["oracle_ic"] for k, v in oracle_on_predictions(frame, truth, horizons, cfg.data.min_stocks).items()}


@health_check(area="quality", marker="slow", fault=_overfit, atft_only=True)
def ten_epoch_gate(fit_10ep: Any, horizons: Horizons, cfg: Config, gate_dataset: Any,
                   artifacts: Artifacts) -> list[CheckResult]:
    """After 10 epochs: losses trend down, no overfitting, test IC@1d and Sharpe above their floors
    (and >= health.oracle_fraction x the oracle on a synthetic panel)."""
    _history(artifacts, "10 epochs", fit_10ep, horizons)
    return quality_gate(fit_10ep.history, fit_10ep.final, horizons, cfg.health,
                        oracle_on_run(gate_dataset, fit_10ep, horizons, cfg))
