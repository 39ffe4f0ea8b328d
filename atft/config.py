"""Structured configuration: one dataclass per concern, merged from YAML and ``key=value``.

YAML files hold only overrides of the defaults below. Unknown keys and wrong types are
rejected with a message naming the key and the file (``ConfigError``). Environment flags the
users already set are documented overrides of config fields (see ``ENV_FLAGS``); the config
is the source of truth once ``load`` has returned.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from atft.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class SynthConfig:
    """Parameters of the embedded synthetic panel (``atft synth``)."""

    stocks: int = 300  # number of stocks in the panel
    days: int = 1250  # number of trading days (~5 years, like a 2020-2025 J-Quants panel)
    features: int = 32  # number of feature columns (informative + noise)
    informative: int = 8  # how many of the features carry the own part of the signal
    sectors: int = 33  # number of sectors (TOPIX-33: ~9 stocks each at 300; why: atft/data/synthetic.py)
    graph_share: float = 0.4  # s: share of the planted signal's variance that comes from peers
    oracle_ic: float = 0.10  # target oracle IC at 1 day (sets the signal scale c)
    seed: int = 0  # generator seed; the same seed gives the same file


@dataclass
class DataConfig:
    """Where the panel comes from and how it becomes day batches."""

    path: str = ""  # parquet file, directory or glob; "" = embedded synthetic panel (cached)
    cache_dir: str = ".cache/atft"  # where the embedded synthetic panel is generated once
    code_col: str = "Code"  # stock identifier column (cast to str)
    date_col: str = "Date"  # trading date column (pl.Date)
    sector_col: str = "sector"  # optional sector column, used for the same_sector edge feature
    market_col: str = "market"  # optional market/segment column, used for the same_market edge feature
    horizons: list[int] = field(default_factory=lambda: [1, 5, 10, 20])  # forecast horizons in trading days
    target_template: str = "feat_ret_{h}d"  # target column per horizon; "{h}" is the horizon
    features: list[str] = field(default_factory=list)  # explicit feature list; [] = all numeric non-id, non-target
    exclude: list[str] = field(default_factory=list)  # columns never used as features
    sequence_length: int = 20  # T: days of history per sample
    val_fraction: float = 0.15  # share of dates for validation (after the train dates)
    test_fraction: float = 0.15  # share of dates for test (last dates)
    embargo_days: int = -1  # dates dropped between splits; -1 = the longest horizon (minimum allowed)
    clip: float = 5.0  # robust clip of normalized features (in robust z units)
    winsor_quantile: float = 0.005  # per-feature winsorization bounds fit on the train dates
    target_scaling: str = "cs_demean"  # "cs_demean" (per-date demean, train std scale) | "scale" | "none"
    min_stocks: int = 20  # dates with fewer valid stocks are skipped (checks, metrics, batches)
    synthetic: SynthConfig = field(default_factory=SynthConfig)  # the embedded default data


@dataclass
class GraphConfig:
    """Per-date stock-correlation graph."""

    enabled: bool = True  # build the graph; env DISABLE_GRAPH_BUILDER=1 sets False
    lookback: int = 250  # L: days of backward returns in the correlation window (one trading year)
    min_obs: int = 40  # minimum overlapping observations for a pair's correlation
    top_k: int = 20  # neighbours kept per stock by the rank_by score (before the symmetric union)
    threshold: float = 0.1  # minimum score (rho, or |rho| with rank_by=abs) for an edge
    residual: str = "beta"  # market move removed before correlating: "none" | "demean" | "beta" (market-model residual)
    rank_by: str = "rho"  # neighbour score: "rho" (positive co-movement) | "abs" (|rho|); threshold applies to it
    return_column: str = ""  # backward 1-day return column; "" = the 1-day target lagged by one day
    cache_size: int = 4096  # graphs kept in the LRU cache (keyed by date, codes, parameters)
    num_threads: int = 0  # torch threads while a graph is built; 0 = the run's (train.num_threads); restored after


@dataclass
class ModelConfig:
    """ATFT-GAT-FAN architecture."""

    num_features: int = 0  # F expected from the data; 0 = take it from the data (then fixed in checkpoints)
    hidden_size: int = 64  # H: width of every block
    vsn_selection: str = "softmax"  # variable-selection weights: "softmax" | "sigmoid"
    vsn_hidden: int = 16  # per-feature embedding/GRN width d of the VSN, then one Linear d -> hidden_size; 0 or >= hidden_size = full width (no projection)
    lstm_layers: int = 1  # layers of the TFT encoder's LSTM
    attention_heads: int = 4  # heads of the TFT self-attention
    dropout: float = 0.1  # dropout inside GRNs, LSTM output and attention
    adaptive_norm: bool = True  # FAN + SAN on the temporal sequence; env BYPASS_ADAPTIVE_NORM=1 sets False
    fan_top_k: int = 3  # FAN: dominant frequencies removed per sequence
    san_slice_len: int = 5  # SAN: slice length in days
    use_gat: bool = True  # graph path on; env BYPASS_GAT_COMPLETELY=1 sets False
    gat_heads: list[int] = field(default_factory=lambda: [4, 2])  # heads per GAT layer (one entry per layer)
    gat_dropout: float = 0.1  # attention dropout inside GATv2Conv
    edge_dropout: float = 0.1  # share of edges dropped per training step
    gat_node_inputs: bool = True  # GAT node features also get a projection of the last-day inputs
    linear_skip: bool = False  # add a linear map of the last-day inputs to every quantile (wide & deep)
    graph_skip: bool = False  # add a linear peer effect of the edge-gated neighbour mean of the last-day inputs (graph path)
    quantiles: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.8])  # quantile levels; median = point
    head_init_std: float = 0.15  # std of the head's last-layer init: first predictions spread ~0.25 target std


@dataclass
class TrainConfig:
    """Optimisation and run outputs."""

    max_epochs: int = 10  # epochs (the only thing that ends a run besides early stopping)
    batch_size: int = 1024  # stocks per step: whole days packed until adding one more would exceed this
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 50  # linear warmup, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1  # floor of the cosine schedule
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    pinball_weight: float = 1.0  # weight of the pinball (quantile) loss
    corr_weight: float = 0.1  # weight of the per-date (1 - Pearson) term; 0 = off
    horizon_weights: list[float] = field(default_factory=list)  # one per horizon; [] = equal (normalized to sum 1)
    cost_bps: float = 0.0  # cost per unit of long-short turnover in basis points: metrics' sharpe_net (0 = gross)
    early_stopping_metric: str = "val/ic_1d"  # metric watched for early stopping and best.pt
    early_stopping_mode: str = "max"  # "max" | "min"
    patience: int = 0  # epochs without improvement before stopping; 0 = off
    max_steps_per_epoch: int = 0  # cap on steps per epoch; 0 = none (logged when set)
    seed: int = 0  # seeds torch, numpy and the day order
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    bf16: bool = False  # bf16 autocast on CUDA
    single_process: bool = False  # one torch/polars thread, no loader workers; env FORCE_SINGLE_PROCESS=1
    num_threads: int = 0  # torch threads; 0 = torch default
    run_dir: str = "runs"  # runs/<run_id>/ holds config, metrics, predictions, checkpoints
    log_dir: str = "_logs/training"  # train_<timestamp>.log
    progress: bool = True  # progress bar on a TTY (plain lines otherwise)


@dataclass
class HealthConfig:
    """Thresholds of the health suite (defaults from the recovery plan)."""

    max_nan_ratio: float = 0.05  # target / feature NaN share, overall and per date
    max_date_nan_ratio: float = 0.5  # NaN share of a target on a single date (outside the legitimate tail)
    max_constant_date_share: float = 0.5  # share of dates on which a feature may be cross-sectionally constant
    leak_corr: float = 0.95  # per-date |corr(feature, target)| above this is leakage
    max_abs_return_1d: float = 1.0  # |1-day return| bound (100%)
    min_head_std: float = 0.001  # per-horizon cross-sectional std of the point forecast
    min_loss: float = 0.0  # loss must be strictly above this
    ic_3ep: float = 0.01  # IC@1d after the 3-epoch checkpoint
    ic_10ep: float = 0.05  # IC@1d after 10 epochs
    sharpe_10ep: float = 0.1  # long-short Sharpe after 10 epochs
    oracle_fraction: float = 0.8  # on the synthetic default: IC@1d >= this x oracle IC
    max_val_rising_epochs: int = 3  # val loss may rise at most this many consecutive epochs
    max_train_val_gap: float = 0.5  # |val - train| / train loss at the end
    gpu_util: float = 0.5  # median GPU utilization during a short run
    cuda_mem_tolerance_mb: float = 64.0  # allowed memory_allocated above the pre-run baseline
    mini_train_steps: int = 8  # steps of the smoke mini-train


@dataclass
class Config:
    """The whole configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    @property
    def graph_on(self) -> bool:
        """The graph path (GAT, graph skip, graph builder) is on only when both ``model.use_gat``
        and ``graph.enabled`` are (env ``BYPASS_GAT_COMPLETELY`` / ``DISABLE_GRAPH_BUILDER`` turn
        one of them off): THE switch, read by the pipeline, the model, checkpoints and checks."""
        return bool(self.model.use_gat) and bool(self.graph.enabled)


# env flag -> (config key, value it sets when the flag is "1"/"true")
ENV_FLAGS: dict[str, tuple[str, Any]] = {
    "BYPASS_GAT_COMPLETELY": ("model.use_gat", False),
    "DISABLE_GRAPH_BUILDER": ("graph.enabled", False),
    "BYPASS_ADAPTIVE_NORM": ("model.adaptive_norm", False),
    "FORCE_SINGLE_PROCESS": ("train.single_process", True),
}


def flag_is_set(value: str | None) -> bool:
    """True for the usual spellings of an enabled flag ("1", "true", "yes", "on")."""
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def _raise(exc: OmegaConfBaseException, source: str) -> None:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    msg = str(exc).splitlines()[0]
    raise ConfigError(
        f"config error in {source}: key '{key}': {msg}. "
        "Fix: remove or rename the key, or give it a value of the documented type "
        "(see atft/config.py)."
    ) from None


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A config path as given, or a packaged config: ``default``, ``default.yaml`` or
    ``configs/default.yaml`` (the repository's ``configs/`` is the packaged directory, so the
    documented paths also work from another directory or an installed copy)."""
    p = Path(path)
    if p.exists():
        return p
    cands = [CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"]
    if p.parent.name == "configs":
        cands.append(CONFIG_DIR / p.name)
    for cand in cands:
        if cand.exists():
            return cand
    raise ConfigError(f"config file not found: {path}. Fix: pass an existing YAML file or one of "
                      f"{sorted(q.stem for q in CONFIG_DIR.glob('*.yaml'))}.")


BASE_KEY = "base"  # a YAML's "base: <config>" layers it on that config (a packaged name or a path)


def _read_yaml(p: Path) -> DictConfig:
    try:
        file_cfg = OmegaConf.load(p)
    except Exception as exc:  # yaml errors are not OmegaConf exceptions
        raise ConfigError(f"cannot read config {p}: {exc}. Fix: make it valid YAML.") from None
    if file_cfg is None or (isinstance(file_cfg, DictConfig) and not file_cfg):
        return OmegaConf.create({})
    if not isinstance(file_cfg, DictConfig):
        raise ConfigError(f"config {p} holds a {type(file_cfg).__name__}, not a mapping of sections. "
                          "Fix: write sections at the top level, e.g. 'train:\n  lr: 3e-4'.")
    return file_cfg


def config_chain(path: str | os.PathLike[str]) -> list[tuple[Path, DictConfig]]:
    """The file at ``path`` and the bases it names, nearest first: ``[(file, its YAML without the
    base key), (its base, ...), ...]``. A base is a packaged name (``default``) or a path relative
    to the file naming it.

    Raises:
        ConfigError: unreadable YAML, a base that does not exist, or a cycle of bases.
    """
    chain: list[tuple[Path, DictConfig]] = []
    seen: list[Path] = []
    p = resolve_path(path)
    while True:
        if p.resolve() in seen:
            names = " -> ".join(str(x) for x in [*seen, p.resolve()])
            raise ConfigError(f"config bases form a cycle: {names}. Fix: remove one '{BASE_KEY}:' line.")
        seen.append(p.resolve())
        file_cfg = _read_yaml(p)
        base = file_cfg.pop(BASE_KEY, None) if BASE_KEY in file_cfg else None
        chain.append((p, file_cfg))
        if base is None:
            return chain
        if not isinstance(base, str) or not base:
            raise ConfigError(f"config {p}: '{BASE_KEY}' must name a config (e.g. 'default'), got {base!r}.")
        rel = p.parent / base
        p = rel if rel.is_file() else resolve_path(base)


def load(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    apply_env: bool = True,
) -> Config:
    """Defaults <- the YAML's bases <- the YAML file <- ``key=value`` overrides <- env flags.

    Args:
        path: YAML file of overrides (or a packaged config name); None = defaults only. A file
            may name ``base: <config>``: it is layered on that config (``config_chain``).
        overrides: dotted ``key=value`` strings (``train.lr=3e-4``).
        env: environment to read flags from (default ``os.environ``).
        apply_env: apply ``ENV_FLAGS`` (the health suite reads the raw config with False).

    Raises:
        ConfigError: unknown key, wrong type or unreadable file, naming key and source.
    """
    cfg: DictConfig = OmegaConf.structured(Config)
    if path is not None:
        for p, file_cfg in reversed(config_chain(path)):  # the root base first, the named file last
            try:
                cfg = OmegaConf.merge(cfg, file_cfg)  # type: ignore[assignment]
            except OmegaConfBaseException as exc:
                _raise(exc, str(p))
    if overrides:
        for ov in overrides:
            if "=" not in ov:
                raise ConfigError(f"override '{ov}' is not key=value. Fix: write e.g. train.lr=3e-4.")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))  # type: ignore[assignment]
        except OmegaConfBaseException as exc:
            _raise(exc, "command-line overrides")
    obj: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    if apply_env:
        apply_env_flags(obj, os.environ if env is None else env)
    validate(obj)
    return obj


def apply_env_flags(cfg: Config, env: Any) -> list[str]:
    """Apply the documented env flags; log one WARNING per flag that changes the config."""
    changed = []
    for flag, (key, value) in ENV_FLAGS.items():
        if flag_is_set(env.get(flag)):
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
            changed.append(flag)
            if flag in ("BYPASS_GAT_COMPLETELY", "DISABLE_GRAPH_BUILDER"):
                log.warning("%s=1 in the environment: the graph path (GAT) is OFF in training "
                            "and evaluation alike (%s=%s)", flag, key, value)
            else:
                log.warning("%s=1 in the environment: %s=%s", flag, key, value)
    return changed


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
    qs = list(m.quantiles)
    if not qs or sorted(qs) != qs or any(not 0 < q < 1 for q in qs) or 0.5 not in qs:
        raise ConfigError(f"model.quantiles must be increasing in (0, 1) and contain 0.5, got {qs}.")
    if m.vsn_selection not in ("softmax", "sigmoid"):
        raise ConfigError(f"model.vsn_selection must be softmax|sigmoid, got '{m.vsn_selection}'.")
    if m.vsn_hidden < 0:
        raise ConfigError(f"model.vsn_hidden must be >= 0 (0 = full width), got {m.vsn_hidden}.")
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


def to_yaml(cfg: Config) -> str:
    """The effective config as YAML (written to runs/<id>/config.yaml and logged)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from a plain dict (e.g. stored next to checkpoint weights)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d))
    except OmegaConfBaseException as exc:
        _raise(exc, "stored config")
    obj: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    return obj


def to_dict(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[assignment]
    return out
