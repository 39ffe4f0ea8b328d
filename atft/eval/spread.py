"""Head spread: is the model's forecast spread across stocks, per horizon? (THE yhat_std of one day)

One function, ``head_spread``, serves ``atft diagnose-head`` and the health suite's head checks:
an eval-mode forward on one batch, and per horizon the cross-sectional (population) std of the
point forecast in return units, the moments of every quantile and the share of rows whose
quantiles are ordered. A constant forecast (``yhat_std = 0``) is the symptom of failure mode 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from atft.data.batch import DayBatch


@dataclass
class HorizonSpread:
    """One horizon's forecasts on the batch (return units when a scale was given).

    Shapes:
        point: ``[N]`` point forecasts; shape: ``[N, Q]`` of the quantile output.
    """

    shape: list[int]
    point_mean: float
    point_std: float  # cross-sectional population std: the recovery plan's yhat_std
    quantiles: dict[str, dict[str, float]]  # "q0.2" -> {"mean", "std"}
    ordered_share: float  # share of rows with q_0 <= q_1 <= ... (1.0 with one quantile)
    point: list[float] = field(default_factory=list)


@dataclass
class HeadSpread:
    """Per-horizon spread of one batch's forecasts, and the fusion gate's mean."""

    horizons: dict[str, HorizonSpread]
    fusion_gate_mean: float
    num_stocks: int

    def collapsed(self, threshold: float) -> list[str]:
        """Horizons whose point std is <= ``threshold`` (or not finite)."""
        return [k for k, s in self.horizons.items() if not math.isfinite(s.point_std) or s.point_std <= threshold]


def _moments(x: torch.Tensor) -> dict[str, float]:
    x = x.detach().double()
    return {"mean": float(x.mean()), "std": float(x.std(correction=0)) if x.numel() > 1 else float("nan")}


@torch.no_grad()
def eval_forward(model: nn.Module, batch: DayBatch) -> dict[str, Any]:
    """Eval-mode forward (dropout off); the previous train/eval mode is restored."""
    was = model.training
    model.eval()
    try:
        out: dict[str, Any] = model(batch)
        return out
    finally:
        model.train(was)


def head_spread(model: nn.Module, batch: DayBatch, quantiles: Sequence[float] | None = None,
                scale: Sequence[float] | None = None, *, out: dict[str, Any] | None = None) -> HeadSpread:
    """Per-horizon spread of the forecasts on one batch, in eval mode.

    Args:
        model: anything with the output contract ``{"predictions": {key: [N, Q]}, "point": {key: [N]}}``.
        batch: the day batch to forecast (one day: the spread is cross-sectional).
        quantiles: the quantile levels of the ``[N, Q]`` outputs (column order); None labels the
            columns by position (a model that does not declare its levels).
        scale: per-horizon factor from the training scale to return units
            (``Normalizer.target_scale``); None keeps the training scale.
        out: an output of ``eval_forward(model, batch)`` already computed (no second forward).

    Shapes:
        predictions ``[N, Q]`` and point ``[N]`` per horizon.
    """
    out = eval_forward(model, batch) if out is None else out
    preds = out["predictions"]
    factors = list(scale) if scale is not None else [1.0] * len(preds)
    horizons: dict[str, HorizonSpread] = {}
    for (key, pred), factor in zip(preds.items(), factors, strict=True):
        q = pred.detach().double() * float(factor)  # [N, Q]
        point = out["point"][key].detach().double() * float(factor)  # [N]
        p = _moments(point)
        ordered = float((q[:, 1:] >= q[:, :-1]).all(dim=1).double().mean()) if q.shape[1] > 1 else 1.0
        horizons[key] = HorizonSpread(
            shape=list(q.shape), point_mean=p["mean"], point_std=p["std"],
            quantiles={(f"q{quantiles[j]:g}" if quantiles is not None else f"col{j}"): _moments(q[:, j])
                       for j in range(q.shape[1])},
            ordered_share=ordered, point=[float(v) for v in point.tolist()])
    gate = out.get("fusion_gate")
    gate_mean = float(gate.double().mean()) if isinstance(gate, torch.Tensor) else float("nan")
    return HeadSpread(horizons, gate_mean, int(batch.num_stocks))
