"""Checks over a finished run (``FitResult``): the 3-epoch checkpoint and the 10-epoch gate.

IC and Sharpe gates are read on the TEST split (never used for model selection), with the
block-bootstrap 95% CI of the mean IC attached as examples; the loss-trend checks use the
per-epoch history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from atft.config import HealthConfig
from atft.health.result import CheckResult
from atft.horizons import Horizons


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0..n-1 (NaN with fewer than 2 finite points)."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def max_rising_run(values: Sequence[float]) -> int:
    """Longest run of consecutive epoch-to-epoch increases."""
    best = cur = 0
    for a, b in zip(values[:-1], values[1:], strict=True):
        cur = cur + 1 if b > a else 0
        best = max(best, cur)
    return best


def _ci(block: dict[str, Any]) -> list[str]:
    lo, hi = block.get("ic_ci95", [float("nan"), float("nan")])
    return [f"IC 95% CI [{lo:.4f}, {hi:.4f}]", f"n_dates={int(block.get('n_dates', 0))}"]


def checkpoint_checks(history: Sequence[dict[str, float]], final: dict[str, Any], horizons: Horizons,
                      h: HealthConfig, ic_threshold: float, prefix: str = "epoch3") -> list[CheckResult]:
    """Loss > 0, yhat_std > floor for every horizon, IC@first-horizon > threshold."""
    last = history[-1]
    test = final["test"]
    out = [
        CheckResult.compare(f"{prefix}_train_loss_positive", last["train/total_loss"], h.min_loss, ">",
                            "train loss is not positive: the loss is not computed from the predictions."),
        CheckResult.compare(f"{prefix}_val_loss_positive", last["val/total_loss"], h.min_loss, ">",
                            "validation loss is not positive (or NaN: every validation target missing?)."),
    ]
    for key in horizons.keys:
        out.append(CheckResult.compare(
            f"{prefix}_yhat_std[{key}]", test[key]["yhat_std"], h.min_head_std, ">",
            f"{key}: predictions collapsed to a constant (yhat_std={test[key]['yhat_std']:.3g}). "
            "Fix: raise the learning rate, check the head init and input normalization."))
    k1 = horizons.keys[0]
    out.append(CheckResult.compare(
        f"{prefix}_ic[{k1}]", test[k1]["ic"], ic_threshold, ">",
        f"{k1}: test IC {test[k1]['ic']:.4f} <= {ic_threshold}: the model has learnt no signal.",
        examples=_ci(test[k1])))
    return out


def quality_gate(history: Sequence[dict[str, float]], final: dict[str, Any], horizons: Horizons,
                 h: HealthConfig, oracle_ic: dict[str, float] | None = None) -> list[CheckResult]:
    """The 10-epoch gate: losses trending down, no overfitting, IC/Sharpe thresholds, oracle share.

    ``oracle_ic`` is the oracle's IC on the same test rows (``atft.synth.oracle.oracle_on_predictions``),
    so the ratio is not blurred by which dates happen to fall in the test split.
    """
    train = [r["train/total_loss"] for r in history]
    val = [r["val/total_loss"] for r in history]
    gap = abs(val[-1] - train[-1]) / train[-1] if train[-1] > 0 else float("nan")
    k1 = horizons.keys[0]
    t1 = final["test"][k1]
    out = [
        CheckResult.compare("train_loss_slope", slope(train), 0.0, "<",
                            f"train loss is not trending down over {len(train)} epochs: {np.round(train, 4).tolist()}"),
        CheckResult.compare("val_loss_slope", slope(val), 0.0, "<",
                            f"val loss is not trending down over {len(val)} epochs: {np.round(val, 4).tolist()}"),
        CheckResult.compare("val_loss_max_rising_epochs", float(max_rising_run(val)),
                            float(h.max_val_rising_epochs), "<=",
                            f"val loss rose for more than {h.max_val_rising_epochs} consecutive epochs: "
                            "overfitting. Fix: more dropout/weight decay, fewer epochs (train.patience)."),
        CheckResult.compare("train_val_gap", gap, h.max_train_val_gap, "<=",
                            f"|val - train| / train loss = {gap:.3f} at the last epoch: overfitting or a "
                            "train/eval preprocessing mismatch."),
        CheckResult.compare(f"ic[{k1}]", t1["ic"], h.ic_10ep, ">",
                            f"{k1}: test IC {t1['ic']:.4f} <= {h.ic_10ep}.", examples=_ci(t1)),
        CheckResult.compare(f"sharpe[{k1}]", t1["sharpe"], h.sharpe_10ep, ">",
                            f"{k1}: long-short Sharpe {t1['sharpe']:.3f} <= {h.sharpe_10ep}.",
                            examples=_ci(t1)),
    ]
    if oracle_ic and k1 in oracle_ic:
        frac = t1["ic"] / oracle_ic[k1]
        out.append(CheckResult.compare(
            f"ic_oracle_fraction[{k1}]", frac, h.oracle_fraction, ">=",
            f"{k1}: test IC {t1['ic']:.4f} is {frac:.2f} x the oracle IC {oracle_ic[k1]:.4f} "
            f"(< {h.oracle_fraction}).", examples=_ci(t1) + [f"oracle={oracle_ic[k1]:.4f}"]))
    return out
