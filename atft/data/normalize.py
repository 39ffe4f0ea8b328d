"""Feature and target normalization, fit on the TRAIN dates only and applied identically to every
split (failure mode 6: no per-batch statistics, no train-only path).

Features, per date (cross-sectionally, over the stocks with a value that day):
  1. winsorize to per-feature bounds fit on the train dates (quantiles q and 1-q, NaN ignored),
  2. robust z-score: ``(x - median) / (1.4826 * MAD)``; std when MAD == 0; 0 when the date has
     fewer than 2 values or no spread (a cross-sectionally constant feature becomes 0 -- correct,
     and flagged by the data checks, failure mode 4),
  3. clip to ``+-clip``, NaN -> 0 (``Panel.valid`` / ``DayBatch.observed`` say what was missing).

Targets: ``cs_demean`` subtracts the per-date cross-sectional mean, then divides by the train-dates
std per horizon; ``scale`` divides by the train std; ``none`` keeps returns. Raw targets are kept
for metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atft.config import Config
from atft.data.panel import Panel
from atft.errors import DataError, ShapeError

MAD_TO_STD = 1.4826  # MAD of a normal distribution x this = its std
CHUNK_BYTES = 64 * 2**20  # working-set size of one date chunk / feature chunk
SCALINGS = ("cs_demean", "scale", "none")


@dataclass
class NormalizedPanel:
    """Model-ready arrays.

    Shapes:
        features: ``[D, N, F]`` float32, winsorized, robust z-scored per date, clipped, NaN -> 0.
        targets: ``[D, N, H]`` float32 in the training scale, NaN kept.
        raw_targets: ``[D, N, H]`` float32 in return units (the panel's array, not a copy).
    """

    features: np.ndarray
    targets: np.ndarray
    raw_targets: np.ndarray


def nanquantile_columns(x: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Per-column quantiles ignoring NaN (numpy's default "linear" method), vectorized.

    Shapes:
        x: ``[M, C]``; qs: ``[Q]`` -> ``[Q, C]`` float64 (NaN for an all-NaN column).
    """
    qs = np.asarray(qs, dtype=np.float64)
    xt = np.array(x.T, order="C", copy=True)  # [C, M] own copy: partitioned in place along the contiguous axis
    nan = np.isnan(xt)
    cnt = xt.shape[1] - nan.sum(axis=1)  # [C]
    xt[nan] = np.inf  # NaN sort last
    pos = qs[None, :] * np.maximum(cnt - 1, 0)[:, None]  # [C, Q]
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    xt.partition(np.unique(np.concatenate([lo.ravel(), hi.ravel()])), axis=1)  # in place
    a = np.take_along_axis(xt, lo, axis=1).astype(np.float64)
    b = np.take_along_axis(xt, hi, axis=1).astype(np.float64)
    t = pos - lo
    with np.errstate(invalid="ignore"):
        diff = b - a
        out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t).T  # numpy's _lerp; [Q, C]
    out[:, cnt == 0] = np.nan
    return out


def nanmedian_last(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median over the last axis ignoring NaN, vectorized (sort with NaN as +inf).

    Shapes:
        x: ``[..., N]`` -> (median ``[...]`` float64, NaN where no value; count ``[...]``).
    """
    nan = np.isnan(x)
    cnt = (~nan).sum(axis=-1)
    s = np.where(nan, np.inf, x)
    s.sort(axis=-1)  # in place (no second copy); float32 sorts use numpy's SIMD path
    lo = np.maximum(cnt - 1, 0) // 2
    hi = np.maximum(cnt // 2, lo)
    a = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0].astype(np.float64)
    b = np.take_along_axis(s, hi[..., None], axis=-1)[..., 0].astype(np.float64)
    with np.errstate(invalid="ignore"):
        med = 0.5 * (a + b)
    med[cnt == 0] = np.nan
    return med, cnt


def robust_zscore(x: np.ndarray, clip: float) -> np.ndarray:
    """Cross-sectional robust z-score over the stock axis, clipped, NaN -> 0.

    Shapes:
        x: ``[C, N, F]`` (C dates) -> ``[C, N, F]`` float32.
    """
    xt = np.ascontiguousarray(np.moveaxis(x, 1, 2), dtype=np.float32)  # [C, F, N]
    med, cnt = nanmedian_last(xt)  # [C, F]
    dev = xt - med[..., None].astype(np.float32)  # [C, F, N], NaN where missing
    mad, _ = nanmedian_last(np.abs(dev))
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.maximum(cnt, 1)
        mean_dev = np.nansum(dev, axis=-1, dtype=np.float64) / n  # mean - median
        msq = np.nansum(dev * dev, axis=-1, dtype=np.float64) / n
        std = np.sqrt(np.maximum(msq - mean_dev**2, 0.0))  # population std
        scale = np.where(mad > 0, MAD_TO_STD * mad, std)  # [C, F]
        ok = (cnt >= 2) & (scale > 0)
        inv = np.where(ok, 1.0 / np.where(ok, scale, 1.0), 0.0).astype(np.float32)  # 0 -> z = 0
        z = dev * inv[..., None]  # [C, F, N]
    np.clip(z, -clip, clip, out=z)
    z[np.isnan(z)] = 0.0  # missing -> 0 (validity lives in Panel.valid / DayBatch.observed)
    return np.ascontiguousarray(np.moveaxis(z, 2, 1))  # [C, N, F]


class Normalizer:
    """Winsorize + cross-sectional robust z-score of features, scaling of targets.

    Args:
        winsor_quantile: q of the per-feature winsorization bounds (q, 1-q) fit on train dates.
        clip: bound of the normalized features (robust z units).
        target_scaling: "cs_demean" | "scale" | "none".
    """

    def __init__(self, winsor_quantile: float = 0.005, clip: float = 5.0,
                 target_scaling: str = "cs_demean") -> None:
        if target_scaling not in SCALINGS:
            raise DataError(f"target_scaling '{target_scaling}' is not one of {list(SCALINGS)}. "
                            "Fix: set data.target_scaling to cs_demean, scale or none.")
        if not 0.0 <= winsor_quantile < 0.5 or clip <= 0:
            raise DataError(f"winsor_quantile={winsor_quantile} must be in [0, 0.5) and clip={clip} > 0. "
                            "Fix: e.g. data.winsor_quantile=0.005, data.clip=5.")
        self.winsor_quantile = float(winsor_quantile)
        self.clip = float(clip)
        self.target_scaling = target_scaling
        self.feature_names: list[str] = []
        self.lower: np.ndarray = np.zeros(0)  # [F] winsorization lower bounds
        self.upper: np.ndarray = np.zeros(0)  # [F] winsorization upper bounds
        self.target_std: np.ndarray = np.zeros(0)  # [H] train std of the (demeaned) targets
        self.num_train_dates = 0

    @classmethod
    def from_config(cls, cfg: Config) -> Normalizer:
        d = cfg.data
        return cls(float(d.winsor_quantile), float(d.clip), str(d.target_scaling))

    @property
    def fitted(self) -> bool:
        return bool(self.feature_names)

    @property
    def target_scale(self) -> np.ndarray:
        """Per-horizon factor from the training scale back to return units (1 for "none").

        A prediction ``p`` in the training scale is ``p * target_scale[h]`` in returns (for
        ``cs_demean`` that is the demeaned return: a cross-sectional ranking, the per-date mean is
        not predicted).

        Shapes:
            -> ``[H]`` float64.
        """
        if self.target_scaling == "none":
            return np.ones_like(self.target_std)
        return self.target_std.copy()

    def fit(self, panel: Panel, train_dates: np.ndarray) -> Normalizer:
        """Fit winsorization bounds and target scales on ``train_dates`` only.

        Shapes:
            train_dates: ``[D_train]`` int date indices into the panel.

        Raises:
            DataError: no train dates, or a horizon without any finite, non-constant train target.
        """
        idx = np.asarray(train_dates, dtype=np.int64)
        if idx.size == 0:
            raise DataError("cannot fit the normalizer on 0 train dates. Fix: use a longer panel or smaller val/test fractions.")
        num_d, num_n, num_f = panel.features.shape
        q = np.array([self.winsor_quantile, 1.0 - self.winsor_quantile])
        step = max(1, CHUNK_BYTES // max(1, idx.size * num_n * 4))
        bounds = np.empty((2, num_f))
        for j0 in range(0, num_f, step):  # feature chunks bound the working set
            block = panel.features[idx, :, j0:j0 + step].reshape(-1, min(step, num_f - j0))  # [Dt*N, c]
            bounds[:, j0:j0 + step] = nanquantile_columns(block, q)
        self.lower, self.upper = bounds[0], bounds[1]
        tgt = self._demean(panel.targets[idx]).astype(np.float64)  # [Dt, N, H]
        cnt = (~np.isnan(tgt)).sum(axis=(0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(tgt, axis=(0, 1)) / cnt
            std = np.sqrt(np.nansum((tgt - mean) ** 2, axis=(0, 1)) / cnt)  # [H], NaN when no values
        bad = [h for h, s in zip(panel.horizons, std.tolist(), strict=True) if not np.isfinite(s) or s <= 0]
        if bad and self.target_scaling != "none":
            raise DataError(f"no spread in the train targets of horizons {bad} (std 0 or no values on the "
                            f"{idx.size} train dates). Fix: check the target columns, or use data.target_scaling=none.")
        self.target_std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        self.feature_names = list(panel.feature_names)
        self.num_train_dates = int(idx.size)
        return self

    def _demean(self, targets: np.ndarray) -> np.ndarray:
        """Per-date cross-sectional demeaning for ``cs_demean`` (identity otherwise).

        Shapes:
            targets: ``[D, N, H]`` -> ``[D, N, H]`` float32.
        """
        if self.target_scaling != "cs_demean":
            return targets
        cnt = (~np.isnan(targets)).sum(axis=1, keepdims=True)
        mean = np.nansum(targets, axis=1, keepdims=True, dtype=np.float64) / np.maximum(cnt, 1)
        return (targets - mean).astype(np.float32)

    def transform_features(self, features: np.ndarray) -> np.ndarray:
        """Winsorize, z-score per date, clip, NaN -> 0; processed in date chunks.

        Shapes:
            features: ``[D, N, F]`` raw -> ``[D, N, F]`` float32.
        """
        self._require_fit(features.shape[-1])
        num_d, num_n, num_f = features.shape
        out = np.empty(features.shape, dtype=np.float32)
        step = max(1, CHUNK_BYTES // max(1, num_n * num_f * 4))
        lo = np.where(np.isnan(self.lower), -np.inf, self.lower).astype(np.float32)  # no train values: no bound
        hi = np.where(np.isnan(self.upper), np.inf, self.upper).astype(np.float32)
        for d0 in range(0, num_d, step):
            block = np.clip(features[d0:d0 + step], lo, hi)  # [c, N, F], NaN stays NaN
            out[d0:d0 + step] = robust_zscore(block, self.clip)
        return out

    def transform_targets(self, targets: np.ndarray) -> np.ndarray:
        """Targets in the training scale (NaN kept).

        Shapes:
            targets: ``[D, N, H]`` -> ``[D, N, H]`` float32.
        """
        if self.target_std.size != targets.shape[-1]:
            raise ShapeError(f"normalizer was fit on {self.target_std.size} horizons, targets have "
                             f"{targets.shape[-1]}. Fix: refit on this panel's horizons.")
        if self.target_scaling == "none":
            return targets.astype(np.float32, copy=True)
        return (self._demean(targets) / self.target_std.astype(np.float32)).astype(np.float32)

    def transform(self, panel: Panel) -> NormalizedPanel:
        """Apply the fitted transform to every date of ``panel`` (all splits alike)."""
        return NormalizedPanel(features=self.transform_features(panel.features),
                               targets=self.transform_targets(panel.targets),
                               raw_targets=panel.targets)

    def _require_fit(self, num_f: int) -> None:
        if not self.fitted:
            raise DataError("normalizer used before fit(). Fix: call fit(panel, split.train) or load_state_dict().")
        if num_f != len(self.feature_names):
            raise ShapeError(f"normalizer was fit on F={len(self.feature_names)} features, data has F={num_f}. "
                             "Fix: use the same data.features as in training, or refit.")

    def state_dict(self) -> dict[str, Any]:
        """Plain lists / floats, stored in checkpoints."""
        return {"winsor_quantile": self.winsor_quantile, "clip": self.clip,
                "target_scaling": self.target_scaling, "feature_names": list(self.feature_names),
                "lower": [float(v) for v in self.lower], "upper": [float(v) for v in self.upper],
                "target_std": [float(v) for v in self.target_std], "num_train_dates": self.num_train_dates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` output.

        Raises:
            DataError: missing keys or inconsistent lengths.
        """
        need = {"winsor_quantile", "clip", "target_scaling", "feature_names", "lower", "upper", "target_std"}
        missing = sorted(need - set(state))
        if missing:
            raise DataError(f"normalizer state lacks {missing}. Fix: use a checkpoint written by this version.")
        names = list(state["feature_names"])
        if not len(names) == len(state["lower"]) == len(state["upper"]):
            raise DataError(f"normalizer state has {len(names)} feature names but {len(state['lower'])} / "
                            f"{len(state['upper'])} bounds. Fix: the checkpoint is corrupt; retrain.")
        self.__init__(float(state["winsor_quantile"]), float(state["clip"]), str(state["target_scaling"]))  # type: ignore[misc]
        self.feature_names = names
        self.lower = np.asarray(state["lower"], dtype=np.float64)
        self.upper = np.asarray(state["upper"], dtype=np.float64)
        self.target_std = np.asarray(state["target_std"], dtype=np.float64)
        self.num_train_dates = int(state.get("num_train_dates", 0))
