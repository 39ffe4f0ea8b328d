"""Cross-field rules of a config that types alone cannot express (``validate``), and THE quantile rule."""

from __future__ import annotations

import math
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


# every range rule of a config value, stated once: key -> (operator, bound, what the value is)
RANGES: dict[str, tuple[str, float, str]] = {
    "data.sequence_length": (">=", 1, "days of history per sample"),
    "data.val_fraction": ("[0,1)", 0, "a share of the dates"),
    "data.test_fraction": ("[0,1)", 0, "a share of the dates"),
    "data.clip": (">", 0, "a robust z-score bound"),
    "data.winsor_quantile": ("[0,0.5)", 0, "a quantile"),
    "data.min_stocks": (">=", 2, "stocks a date needs (a cross-section needs two)"),
    "data.prefetch": (">=", 0, "batches produced ahead (0 = off)"),
    "health.smoke_stocks": (">=", 0, "stocks per day of the model checks (0 = all)"),
    "data.synthetic.stocks": (">=", 2, "stocks"),
    "data.synthetic.days": (">=", 2, "trading days"),
    "data.synthetic.features": (">=", 2, "feature columns"),
    "graph.lookback": (">=", 2, "days of returns"),
    "graph.min_obs": (">=", 2, "overlapping observations"),
    "graph.top_k": (">=", 1, "neighbours"),
    "graph.threshold": ("[0,1)", 0, "a correlation"),
    "graph.cache_size": (">=", 0, "graphs"),
    "graph.num_threads": (">=", 0, "threads (0 = the run's)"),
    "model.num_features": (">=", 0, "features (0 = from the data)"),
    "model.hidden_size": (">=", 1, "a width"),
    "model.vsn_hidden": (">=", 0, "a per-feature width (0 = full width)"),
    "model.lstm_layers": (">=", 1, "layers"),
    "model.attention_heads": (">=", 1, "heads"),
    "model.dropout": ("[0,1)", 0, "a probability"),
    "model.gat_dropout": ("[0,1)", 0, "a probability"),
    "model.edge_dropout": ("[0,1)", 0, "a probability"),
    "model.fan_top_k": (">=", 0, "frequencies"),
    "model.san_slice_len": (">=", 1, "days"),
    "model.head_init_std": (">=", 0, "a standard deviation"),
    "train.max_epochs": (">=", 1, "epochs (0 would evaluate an untrained model)"),
    "train.batch_size": (">=", 1, "stocks per step"),
    "train.lr": (">", 0, "a learning rate"),
    "train.weight_decay": (">=", 0, "a weight decay"),
    "train.warmup_steps": (">=", 0, "steps"),
    "train.min_lr_ratio": ("[0,1]", 0, "a share of the peak learning rate"),
    "train.grad_clip": (">=", 0, "a gradient norm (0 = off)"),
    "train.ema_decay": ("[0,1)", 0, "a decay of the weight average (0 = off)"),
    "train.pinball_weight": (">=", 0, "a loss weight"),
    "train.corr_weight": (">=", 0, "a loss weight"),
    "train.cost_bps": (">=", 0, "a cost in basis points"),
    "train.patience": (">=", 0, "epochs (0 = off)"),
    "train.max_steps_per_epoch": (">=", 0, "steps (0 = no cap)"),
    "train.num_threads": (">=", 0, "threads (0 = auto)"),
    "train.log_every_s": (">=", 0, "seconds (0 = no progress lines)"),
    "health.mini_train_steps": (">=", 1, "steps"),
    "health.guard_every": (">=", 0, "steps (0 = guards off)"),
    "health.guard_graph_every": (">=", 0, "steps (0 = no graph guard)"),
    "health.min_mini_train_decrease": ("[0,1)", 0, "a share of the loss"),
}


def _value(cfg: Config, key: str) -> float:
    obj: object = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return float(obj)  # type: ignore[arg-type]


def _in_range(op: str, bound: float, v: float) -> bool:
    if op == ">=":
        return v >= bound
    if op == ">":
        return v > bound
    lo, hi = op[1:-1].split(",")
    return (v >= float(lo)) and (v < float(hi) if op.endswith(")") else v <= float(hi))


def check_ranges(cfg: Config) -> None:
    """Every value of ``RANGES`` finite and in its range, else one ConfigError naming the key, the value
    and the fix."""
    for key, (op, bound, what) in RANGES.items():
        v = _value(cfg, key)
        if not (math.isfinite(v) and _in_range(op, bound, v)):  # NaN and +-inf fail too
            rule = ("finite and " if v == v and not math.isfinite(v) else "") + (
                f"{op} {bound:g}" if op in (">=", ">") else f"in {op}")
            raise ConfigError(f"{key}={v:g} is out of range: it is {what} and must be {rule}. "
                              f"Fix: set {key} to a value {rule} (in the YAML or as {key}=...).")


def validate(cfg: Config) -> None:
    """Value ranges (``RANGES``) and the cross-field checks that types alone cannot express."""
    check_ranges(cfg)
    d, m, t = cfg.data, cfg.model, cfg.train
    if not d.horizons or any(h <= 0 for h in d.horizons) or len(set(d.horizons)) != len(d.horizons):
        raise ConfigError(f"data.horizons must be distinct positive integers, got {d.horizons}.")
    if "{h}" not in d.target_template:
        raise ConfigError(f"data.target_template '{d.target_template}' must contain '{{h}}'.")
    if d.val_fraction + d.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {d.val_fraction + d.test_fraction:g} leaves "
                          "no training dates. Fix: keep their sum below 1 (e.g. 0.15 + 0.15).")
    if cfg.graph.min_obs > cfg.graph.lookback:
        raise ConfigError(f"graph.min_obs={cfg.graph.min_obs} exceeds graph.lookback={cfg.graph.lookback}: no pair "
                          "could qualify and every graph would be empty. Fix: set min_obs <= lookback.")
    if cfg.graph.residual not in ("none", "demean", "beta") or cfg.graph.rank_by not in ("rho", "abs"):
        raise ConfigError(f"graph.residual='{cfg.graph.residual}' / graph.rank_by='{cfg.graph.rank_by}' unknown. "
                          "Fix: residual one of none|demean|beta, rank_by one of rho|abs.")
    for name in ("loss", "yhat_std", "grad_norm", "update_ratio", "skipped", "graph"):
        rule = getattr(cfg.health.guards, name)
        if rule.action not in ("warn", "stop", "off") or rule.patience < 1:
            raise ConfigError(f"health.guards.{name}: action must be warn|stop|off and patience >= 1, got "
                              f"{rule.action!r} / {rule.patience}. Fix: e.g. health.guards.{name}.action=warn.")
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
