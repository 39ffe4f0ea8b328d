"""Model and training-step checks (smoke), on atft's model or the user's (``--atft-model``).

Horizon keys, head spread, THE training step (atft's ``train_step`` or ``--atft-train-step``),
the graph path's effect, and a mini-train with the leak check. Each planted fault wraps the model
or the step the way a user's pipeline breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from atft.config import Config
from atft.data.batch import DayBatch
from atft.errors import HorizonMismatchError
from atft.health.adapter import ForeignModel
from atft.health.context import Artifacts, HealthContext
from atft.health.model_checks import (
    check_gat_effect,
    check_head_spread,
    check_horizon_keys,
    check_training_step,
    mini_train,
)
from atft.health.registry import health_check
from atft.health.result import CheckResult
from atft.horizons import Horizons


class Faulty(nn.Module):
    """A model under test with a planted fault in its forward (``fault(inner, batch) -> output``)."""

    def __init__(self, inner: nn.Module, fault: Callable[[nn.Module, DayBatch], Any]) -> None:
        super().__init__()
        self.inner = inner
        self.fault = fault
        self.quantiles = getattr(inner, "quantiles", None)
        self.num_features = getattr(inner, "num_features", 0)

    def forward(self, batch: DayBatch) -> Any:
        return self.fault(self.inner, batch)

    def parts(self) -> dict[str, nn.Module | None]:
        from atft.health.model_checks import model_parts

        return model_parts(self.inner)


def with_model_fault(fault: Callable[[nn.Module, DayBatch], Any]) -> Callable[[HealthContext], HealthContext]:
    """A planted fault that wraps the model under test's forward."""
    def plant(ctx: HealthContext) -> HealthContext:
        return ctx.replace(model=Faulty(ctx.resolve("model"), fault))

    plant.__name__ = f"plant_{fault.__name__.lstrip('_')}"
    return plant


def _keys_without_d(inner: nn.Module, batch: DayBatch) -> Any:  # horizon_1 instead of horizon_1d
    out = inner(batch)
    return {**out, "predictions": {k.removesuffix("d"): v for k, v in out["predictions"].items()},
            "point": {k.removesuffix("d"): v for k, v in out["point"].items()}}


@health_check(area="horizons", fault=with_model_fault(_keys_without_d))
def horizon_keys(model: nn.Module, day_batch: DayBatch, loss_fn: Any, horizons: Horizons,
                 dataset_columns: list[str]) -> list[CheckResult]:
    """Model output keys == loss terms that got targets == metrics computed from written predictions ==
    configured horizons == dataset targets."""
    from atft.train.step import metrics_from_predictions, predict

    with torch.no_grad():
        out = model(day_batch)
        try:  # the loss terms that really got targets from the batch (not the configured list)
            loss_keys = [k for k, n in loss_fn(out, day_batch).n_valid_per_horizon.items() if n > 0]
        except HorizonMismatchError:
            loss_keys = []  # the loss matched no horizon: what the original zero loss did
    try:  # the metric columns really computed from the written prediction rows
        frame, _, _ = predict(model, [day_batch], horizons)
        metrics = metrics_from_predictions(frame, horizons, min_stocks=2)[0]
        metric_keys = [k for k, m in metrics.items() if m["n_rows"] > 0 and horizons.pred_columns[
            horizons.keys.index(k)] in frame.columns]
    except HorizonMismatchError:
        metric_keys = []
    return check_horizon_keys(horizons, dataset_columns, out, loss_keys, metric_keys)


def _constant_head(inner: nn.Module, batch: DayBatch) -> Any:  # every stock gets the day's mean forecast
    out = inner(batch)
    preds = {k: q.mean(dim=0, keepdim=True).expand_as(q) for k, q in out["predictions"].items()}
    return {**out, "predictions": preds, "point": {k: q[:, q.shape[1] // 2] for k, q in preds.items()}}


@health_check(area="head", fault=with_model_fault(_constant_head))
def head_std(model: nn.Module, day_batch: DayBatch, horizons: Horizons, cfg: Config,
             target_scale: Sequence[float], artifacts: Artifacts) -> list[CheckResult]:
    """Per-horizon cross-sectional std of the point forecast on a real day > health.min_head_std."""
    results, samples = check_head_spread(model, day_batch, horizons, cfg.health.min_head_std, target_scale)
    artifacts.add("predictions", {"source": f"the model under test on the validation day {day_batch.dates[0]} "
                                            f"({day_batch.num_stocks} stocks)", "values": samples,
                                  "threshold": cfg.health.min_head_std})
    return results


def _detached_zero_loss(ctx: HealthContext) -> HealthContext:
    """The original bug: the loss read the top-level dict, matched no horizon, returned a zero."""
    def step(model: nn.Module, batch: DayBatch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        out = model(batch)
        matched = [k for k in out if k in ctx.resolve("horizons").keys]
        return torch.zeros(()) if not matched else torch.ones(())

    return ctx.replace(train_step=step)


@health_check(area="training", fault=_detached_zero_loss)
def training_step(model: nn.Module, day_batch: DayBatch, loss_fn: Any, train_step: Any, cfg: Config,
                  allow_gat_bypass: bool) -> list[CheckResult]:
    """THE training step: loss finite and > 0 with a gradient path; gradient in every part of the model."""
    return check_training_step(model, day_batch, loss_fn, allow_gat_bypass, step=train_step, lr=cfg.train.lr,
                               min_update=cfg.health.min_update_ratio)


def _edges_dropped(inner: nn.Module, batch: DayBatch) -> Any:  # BYPASS_GAT_COMPLETELY, by hand
    return inner(batch.without_edges())


def _takes_edges(model: nn.Module) -> bool:
    """atft's model, or a user's model holding a torch_geometric message-passing layer."""
    if not isinstance(model, ForeignModel):
        return True
    from torch_geometric.nn import MessagePassing

    return any(isinstance(m, MessagePassing) for m in model.inner.modules())


@health_check(area="graph", fault=with_model_fault(_edges_dropped))
def gat_not_bypassed(model: nn.Module, day_batch: DayBatch, horizons: Horizons, cfg: Config,
                     allow_gat_bypass: bool) -> CheckResult:
    """Removing the GAT's edges changes the forecasts by health.min_graph_effect x their spread."""
    if not _takes_edges(model):
        return CheckResult.not_applicable("gat_edges_change_output", "the model under test has no graph layer "
                                          "(no torch_geometric MessagePassing module): edges cannot matter")
    r = check_gat_effect(model, day_batch, horizons, cfg.health.min_graph_effect)
    if allow_gat_bypass and not r.passed:
        r.passed, r.message = True, "GAT bypass allowed by --atft-allow-gat-bypass"
    return r


def _optimizer_never_steps(ctx: HealthContext) -> HealthContext:
    def step(model: nn.Module, batch: DayBatch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        return ctx.resolve("loss_fn")(model(batch), batch).total.detach()

    return ctx.replace(train_step=step)


@health_check(area="training", fault=_optimizer_never_steps, name="mini_train")
def mini_train_check(model: nn.Module, train_batches: list[DayBatch], loss_fn: Any, train_step: Any,
                     cfg: Config, horizons: Horizons, target_scale: Sequence[float]) -> list[CheckResult]:
    """A few steps of THE training step: fixed-batch loss goes down, spread survives, nothing leaks."""
    def step(m: nn.Module, b: DayBatch, lf: Any, opt: torch.optim.Optimizer) -> None:
        train_step(m, b, opt)

    return mini_train(model, train_batches, loss_fn, steps=cfg.health.mini_train_steps, lr=cfg.train.lr,
                      horizons=horizons, min_std=cfg.health.min_head_std, step_fn=step, scale=target_scale,
                      min_decrease=cfg.health.min_mini_train_decrease)
