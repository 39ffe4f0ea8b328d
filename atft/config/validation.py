"""Cross-field rules of a config that types alone cannot express (``validate``), and THE quantile rule."""

from __future__ import annotations

from collections.abc import Sequence

from atft.config.sections import Config
from atft.errors import ConfigError


def validate_quantiles(quantiles: Sequence[float]) -> list[float]:
    """THE quantile rule (config, loss and heads): strictly increasing levels in (0, 1) that
    contain 0.5 (the median is the point forecast). Returns them as floats.

    Raises:
        ConfigError: any other list, named with the fix.
    """
    qs = [float(q) for q in quantiles]
    if not qs or sorted(set(qs)) != qs or any(not 0.0 < q < 1.0 for q in qs) or 0.5 not in qs:
        raise ConfigError(
            f"model.quantiles must be strictly increasing in (0, 1) and contain 0.5, got {qs}. "
            "Fix: e.g. [0.2, 0.5, 0.8] (the median is the point forecast).")
    return qs


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    d, m, t = cfg.data, cfg.model, cfg.train
    if not d.horizons or any(h <= 0 for h in d.horizons) or len(set(d.horizons)) != len(d.horizons):
        raise ConfigError(f"data.horizons must be distinct positive integers, got {d.horizons}.")
    if "{h}" not in d.target_template:
        raise ConfigError(f"data.target_template '{d.target_template}' must contain '{{h}}'.")
    if d.sequence_length < 1:
        raise ConfigError("data.sequence_length must be >= 1.")
    if d.embargo_days != -1 and d.embargo_days < max(d.horizons):
        raise ConfigError(f"data.embargo_days={d.embargo_days} is shorter than the longest horizon "
                          f"{max(d.horizons)}: targets would cross the split. Fix: set -1 or >= {max(d.horizons)}.")
    if d.target_scaling not in ("cs_demean", "scale", "none"):
        raise ConfigError(f"data.target_scaling must be cs_demean|scale|none, got '{d.target_scaling}'.")
    validate_quantiles(m.quantiles)
    if m.vsn_selection not in ("softmax", "sigmoid"):
        raise ConfigError(f"model.vsn_selection must be softmax|sigmoid, got '{m.vsn_selection}'.")
    if not m.gat_heads or any(h < 1 for h in m.gat_heads):
        raise ConfigError(f"model.gat_heads must list >= 1 heads per layer, got {m.gat_heads}.")
    if m.hidden_size % m.attention_heads:
        raise ConfigError(f"model.hidden_size={m.hidden_size} must be divisible by "
                          f"model.attention_heads={m.attention_heads}.")
    if t.horizon_weights and len(t.horizon_weights) != len(d.horizons):
        raise ConfigError(f"train.horizon_weights has {len(t.horizon_weights)} entries for "
                          f"{len(d.horizons)} horizons {d.horizons}.")
    if t.early_stopping_mode not in ("max", "min"):
        raise ConfigError("train.early_stopping_mode must be max|min.")
    if t.batch_size < 1:
        raise ConfigError("train.batch_size must be >= 1 (stocks per step).")
