"""Masked multi-horizon loss: pinball over the quantiles plus an optional per-date correlation term.

The loss reads ``output["predictions"]`` (design.md section 4) and nothing else: a model output
without that entry, or predictions whose keys are not exactly the configured ``horizon_{h}d``
keys, raise ``HorizonMismatchError`` naming the symmetric difference (failure modes 1-3 of
design.md section 6: "no matching horizons" is never a silent zero loss).

Missing targets (NaN, ``batch.target_mask`` False) are masked out with ``torch.where`` before any
product, never filled with 0 into the loss (failure mode 5). A horizon without any valid target
in the batch contributes an exact 0 that still depends on the predictions, so the loss always
has a gradient path to the parameters; when no target at all is valid, ``LossOutput.n_valid``
is 0 and the training loop can count the batch as skipped.

The per-date correlation term is ``1 - Pearson(point, target)`` computed per packed day via
``batch.day_index`` with segment sums (``index_add_``, no Python loop over days) and averaged
over the days with at least 2 valid stocks and a non-constant target. The point forecast is the
median quantile (design.md section 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from atft.config import validate_quantiles
from atft.data.batch import DayBatch
from atft.errors import ConfigError, HorizonMismatchError, ShapeError
from atft.horizons import Horizons

# Variance floor of the per-date Pearson denominator. A day whose prediction is constant gets
# Pearson 0 (loss 1) with a finite gradient instead of 0/0.
_VAR_EPS = 1e-12


@dataclass
class LossOutput:
    """What one loss evaluation returns.

    Attributes:
        total: scalar, ``pinball_weight * pinball + corr_weight * corr``; always has a
            gradient path when the predictions require grad (never a detached zero).
        per_horizon: ``horizon_{h}d`` -> scalar, that horizon's
            ``pinball_weight * pinball_h + corr_weight * corr_h`` before the horizon weight.
        pinball: scalar, horizon-weighted pinball part.
        corr: scalar, horizon-weighted ``1 - Pearson`` part (computed even when its weight is 0,
            for logging).
        n_valid: number of valid (row, horizon) target cells; 0 means the batch carried no
            information (the loop skips and counts it).
        n_valid_per_horizon: ``horizon_{h}d`` -> valid target rows of that horizon.
    """

    total: Tensor
    per_horizon: dict[str, Tensor]
    pinball: Tensor
    corr: Tensor
    n_valid: int
    n_valid_per_horizon: dict[str, int] = field(default_factory=dict)


def _normalized_weights(weights: Sequence[float] | None, horizons: Horizons) -> list[float]:
    """Horizon weights summing to 1; None or [] = equal weights."""
    if not weights:
        return [1.0 / len(horizons)] * len(horizons)
    w = [float(x) for x in weights]
    if len(w) != len(horizons):
        raise ConfigError(
            f"train.horizon_weights has {len(w)} entries for {len(horizons)} horizons "
            f"{list(horizons.horizons)}. Fix: give one weight per horizon or [] for equal weights."
        )
    if any(not x >= 0.0 or x == float("inf") for x in w) or sum(w) <= 0.0:
        raise ConfigError(
            f"train.horizon_weights must be finite, >= 0 and not all 0, got {w}. "
            "Fix: use non-negative weights (they are normalized to sum 1)."
        )
    s = sum(w)
    return [x / s for x in w]


def _segment_sum(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Sum rows of ``values`` [N, H] into ``num_segments`` rows by ``index`` [N] -> [D, H]."""
    out = values.new_zeros((num_segments, values.shape[1]))
    return out.index_add(0, index, values)


def per_date_pearson(point: Tensor, target: Tensor, mask: Tensor, day_index: Tensor,
                     num_days: int) -> tuple[Tensor, Tensor]:
    """Pearson correlation of ``point`` and ``target`` per (day, horizon) over the masked rows.

    Masked-out rows are replaced by 0 with ``torch.where`` before any product, so NaN targets
    never reach the result or its gradient.

    Shapes:
        point, target: ``[N, H]``; mask: ``[N, H]`` bool; day_index: ``[N]`` long in
        ``[0, num_days)``. Returns ``r [D, H]`` and ``ok [D, H]`` bool (>= 2 valid rows and a
        non-constant target; ``r`` is meaningless where not ``ok``).
    """
    m = mask.to(point.dtype)
    p = torch.where(mask, point, torch.zeros_like(point))
    y = torch.where(mask, target, torch.zeros_like(target))
    n = _segment_sum(m, day_index, num_days)  # [D, H]
    n_safe = n.clamp_min(1.0)
    pc = (p - (_segment_sum(p, day_index, num_days) / n_safe)[day_index]) * m  # [N, H]
    yc = (y - (_segment_sum(y, day_index, num_days) / n_safe)[day_index]) * m  # [N, H]
    cov = _segment_sum(pc * yc, day_index, num_days)  # [D, H]
    vp = _segment_sum(pc * pc, day_index, num_days)
    vy = _segment_sum(yc * yc, day_index, num_days)
    r = cov / (vp.clamp_min(_VAR_EPS).sqrt() * vy.clamp_min(_VAR_EPS).sqrt())
    ok = (n >= 2) & (vy > 0)
    return r, ok


class MultiHorizonLoss(nn.Module):
    """Pinball (quantile) loss per horizon plus an optional per-date ``1 - Pearson`` term.

    ``total = sum_j w_j * (pinball_weight * pinball_j + corr_weight * corr_j)`` with horizon
    weights ``w`` normalized to sum 1. ``pinball_j`` is the mean over valid rows and quantiles
    of ``max(q * e, (q - 1) * e)``, ``e = y - yhat_q``; ``corr_j`` the mean over valid days of
    ``1 - Pearson(median forecast, y)``.

    Args:
        horizons: the configured horizons; column j of ``batch.targets`` is ``horizons.horizons[j]``.
        quantiles: increasing quantile levels in (0, 1) containing 0.5 (the point forecast).
        pinball_weight: weight of the pinball part.
        corr_weight: weight of the correlation part (0 = off in the total; still reported).
        horizon_weights: one weight per horizon, normalized to sum 1; None or [] = equal.

    Shapes:
        output["predictions"][horizon_{h}d]: ``[N, Q]``; batch.targets / target_mask: ``[N, H]``;
        batch.day_index: ``[N]``. All LossOutput tensors are scalars.
    """

    quantiles: Tensor
    horizon_weights: Tensor

    def __init__(self, horizons: Horizons, quantiles: Sequence[float], pinball_weight: float = 1.0,
                 corr_weight: float = 0.0, horizon_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        qs = validate_quantiles(quantiles)
        if not (pinball_weight >= 0.0 and corr_weight >= 0.0) or pinball_weight + corr_weight <= 0.0:
            raise ConfigError(
                f"train.pinball_weight={pinball_weight} and train.corr_weight={corr_weight} must be "
                ">= 0 and not both 0. Fix: e.g. pinball_weight=1.0, corr_weight=0.1."
            )
        self.horizons = horizons
        self.keys = horizons.keys
        self.median_index = qs.index(0.5)
        self.pinball_weight = float(pinball_weight)
        self.corr_weight = float(corr_weight)
        self.register_buffer("quantiles", torch.tensor(qs, dtype=torch.float64), persistent=False)
        self.register_buffer("horizon_weights",
                             torch.tensor(_normalized_weights(horizon_weights, horizons),
                                          dtype=torch.float64), persistent=False)

    @classmethod
    def from_config(cls, cfg: object) -> MultiHorizonLoss:
        """Build from ``cfg.train.*``, ``cfg.model.quantiles`` and ``Horizons.from_config(cfg)``."""
        t = cfg.train  # type: ignore[attr-defined]
        return cls(Horizons.from_config(cfg), list(cfg.model.quantiles),  # type: ignore[attr-defined]
                   pinball_weight=float(t.pinball_weight), corr_weight=float(t.corr_weight),
                   horizon_weights=list(t.horizon_weights) or None)

    def _stack_predictions(self, output: Mapping[str, object], n: int) -> Tensor:
        """``output["predictions"]`` checked against the horizons and stacked to ``[N, H, Q]``."""
        if not isinstance(output, Mapping) or "predictions" not in output:
            got = sorted(map(str, output.keys())) if isinstance(output, Mapping) else []
            hint = ("; these are horizon keys: pass the model's whole output, not output['predictions']"
                    if set(got) & set(self.keys) else "")
            raise HorizonMismatchError(
                f"the loss reads output['predictions'] = {{'horizon_{{h}}d': [N, Q]}} from the model's "
                f"whole output; got {type(output).__name__} with keys {got}, missing ['predictions']"
                f"{hint}. Fix: call loss(model(batch), batch)."
            )
        preds = output["predictions"]
        if not isinstance(preds, Mapping):
            raise HorizonMismatchError(
                f"output['predictions'] must be a dict keyed 'horizon_{{h}}d', got "
                f"{type(preds).__name__}. Fix: return {{'predictions': {{key: [N, Q]}}}} from the model."
            )
        self.horizons.check_keys(preds.keys(), "output['predictions']")
        q = self.quantiles.numel()
        for key in self.keys:
            t = preds[key]
            if not isinstance(t, Tensor) or t.shape != (n, q):
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ShapeError(f"output['predictions']['{key}'] must be [N, Q] = [{n}, {q}] "
                                 f"(one column per quantile {self.quantiles.tolist()}), got {shape}.")
        stacked = torch.stack([preds[k] for k in self.keys], dim=1)  # [N, H, Q]
        return stacked.to(torch.promote_types(stacked.dtype, torch.float32))

    def forward(self, output: Mapping[str, object], batch: DayBatch) -> LossOutput:
        """Loss of the model ``output`` on ``batch``.

        Shapes:
            output["predictions"][key]: ``[N, Q]``; batch.targets: ``[N, H]``. Returns scalars.

        Raises:
            HorizonMismatchError: no ``predictions`` entry, or its keys differ from the horizons.
            ShapeError: a prediction is not ``[N, Q]`` or the targets are not ``[N, H]``.
        """
        n, h = batch.targets.shape[0], len(self.keys)
        if batch.targets.dim() != 2 or batch.targets.shape[1] != h:
            raise ShapeError(f"batch.targets must be [N, H] with H={h} horizons {self.keys}, "
                             f"got {tuple(batch.targets.shape)}. Fix: build batches with the same "
                             "data.horizons as the loss.")
        pred = self._stack_predictions(output, n)  # [N, H, Q]
        dtype = pred.dtype
        y = batch.targets.to(dtype)
        mask = batch.target_mask.to(torch.bool) & torch.isfinite(y)  # [N, H]
        y0 = torch.where(mask, y, torch.zeros_like(y))  # NaN never reaches a product

        qs = self.quantiles.to(dtype)  # [Q]
        err = y0.unsqueeze(-1) - pred  # [N, H, Q]
        pin = torch.maximum(qs * err, (qs - 1.0) * err)
        pin = torch.where(mask.unsqueeze(-1), pin, torch.zeros_like(pin))
        counts = mask.sum(dim=0)  # [H]
        pinball_h = pin.sum(dim=(0, 2)) / (counts.clamp_min(1).to(dtype) * qs.numel())  # [H]

        num_days = len(batch.dates) if batch.dates else (int(batch.day_index.max()) + 1 if n else 1)
        r, ok = per_date_pearson(pred[:, :, self.median_index], y0, mask, batch.day_index, num_days)
        okf = ok.to(dtype)  # [D, H]
        one_minus_r = torch.where(ok, 1.0 - r, torch.zeros_like(r))
        corr_h = one_minus_r.sum(dim=0) / okf.sum(dim=0).clamp_min(1.0)  # [H]

        w = self.horizon_weights.to(dtype)  # [H]
        per_h = self.pinball_weight * pinball_h + self.corr_weight * corr_h  # [H]
        pinball = (w * pinball_h).sum()
        corr = (w * corr_h).sum()
        total = self.pinball_weight * pinball + self.corr_weight * corr
        n_per_h = counts.tolist()  # the one host sync of a step
        return LossOutput(
            total=total,
            per_horizon={k: per_h[j] for j, k in enumerate(self.keys)},
            pinball=pinball,
            corr=corr,
            n_valid=int(sum(n_per_h)),
            n_valid_per_horizon={k: int(c) for k, c in zip(self.keys, n_per_h, strict=True)},
        )
