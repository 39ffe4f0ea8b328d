"""The config sections: one dataclass per concern, every field with a default and a comment.

``atft.config.load`` merges YAML and ``key=value`` overrides onto these defaults (unknown keys and
wrong types rejected); ``atft.config.validation`` holds the cross-field rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    prefetch: int = 1  # batches (graphs included) built ahead by a background thread while a step runs; 0 = off (also under train.single_process)
    synthetic: SynthConfig = field(default_factory=SynthConfig)  # the embedded default data


@dataclass
class GraphConfig:
    """Per-date stock-correlation graph."""

    enabled: bool = True  # build the graph; env DISABLE_GRAPH_BUILDER=1 sets False
    lookback: int = 250  # L: days of backward returns in the correlation window (one trading year)
    min_obs: int = 40  # minimum overlapping observations for a pair's correlation
    top_k: int = 20  # neighbours kept per stock by the rank_by score (before the symmetric union)
    threshold: float = 0.1  # minimum score (rho, or |rho| with rank_by=abs) for an edge
    sector_k: int = 8  # same-sector neighbours kept per stock besides top_k (most correlated first, no threshold; needs data.sector_col); 0 = none. Why 8: docs/decisions.md 2026-12-03 (third session)
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
    adaptive_norm: bool = True  # FAN + SAN on the temporal sequence (optional: measured near-inert at T=5, docs/decisions.md); env BYPASS_ADAPTIVE_NORM=1 sets False
    fan_top_k: int = 3  # FAN: dominant frequencies removed per sequence
    san_slice_len: int = 5  # SAN: slice length in days
    use_gat: bool = True  # graph path on; env BYPASS_GAT_COMPLETELY=1 sets False
    gat_heads: list[int] = field(default_factory=lambda: [4, 2])  # heads per GAT layer (one entry per layer)
    gat_dropout: float = 0.1  # attention dropout inside GATv2Conv
    edge_dropout: float = 0.1  # share of edges dropped per training step
    gat_node_inputs: bool = True  # GAT node features also get a projection of the last-day inputs
    linear_skip: bool = False  # add a linear map of the last-day inputs to every quantile (wide & deep)
    graph_skip: bool = False  # add a linear peer effect of the edge-gated neighbour mean of the last-day inputs (graph path)
    graph_skip_sector_mean: bool = False  # the graph skip also maps the same-sector neighbour mean by a direction of its own
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
    ema_decay: float = 0.0  # EMA of the weights after every step, validated, kept and scored instead of them (atft.train.averaging); 0 = off
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
    num_threads: int = 0  # torch threads; 0 = auto: the fastest of 1, 2, 4.. up to the usable cores, timed on the run's steps (atft.train.threads)
    run_dir: str = "runs"  # runs/<run_id>/ holds config, metrics, predictions, checkpoints
    log_dir: str = "_logs/training"  # train_<timestamp>.log
    progress: bool = True  # progress bar on a TTY (plain lines otherwise)
    log_every_s: float = 30.0  # without a TTY: a progress line (step, samples/s, loss, ETA) at most this often; 0 = none


@dataclass
class GuardRule:
    """One live guard of ``fit`` (``atft.train.guards``): when its signal crosses ``threshold`` on
    ``patience`` consecutive guard checks, it warns or stops the run (exit code 3)."""

    threshold: float = 0.0  # the bound of the signal (what it is: GuardsConfig's comments)
    patience: int = 1  # consecutive guard checks over the bound before the action
    action: str = "warn"  # "warn" (log + AtftWarning) | "stop" (last.pt kept, exit code 3) | "off"


@dataclass
class GuardsConfig:
    """The live guards of ``fit`` (the recovery plan's Step 4, automated; ``atft.train.guards``)."""

    loss: GuardRule = field(default_factory=lambda: GuardRule(0.0, 1, "stop"))  # loss finite, > threshold, with a gradient path
    yhat_std: GuardRule = field(default_factory=lambda: GuardRule(1e-4, 3, "stop"))  # every horizon's yhat_std (return units) <= threshold
    grad_norm: GuardRule = field(default_factory=lambda: GuardRule(0.0, 3, "warn"))  # a model part's gradient norm <= threshold (dead)
    update_ratio: GuardRule = field(default_factory=lambda: GuardRule(1e-6, 3, "warn"))  # ||dtheta|| / ||theta|| <= threshold
    skipped: GuardRule = field(default_factory=lambda: GuardRule(0.5, 1, "warn"))  # share of batches skipped (no target) > threshold
    graph: GuardRule = field(default_factory=lambda: GuardRule(1e-3, 2, "warn"))  # GAT effect / forecast spread <= threshold


@dataclass
class HealthConfig:
    """Thresholds of the health suite (defaults from the recovery plan)."""

    max_nan_ratio: float = 0.05  # target / feature NaN share, overall and per date
    max_date_nan_ratio: float = 0.5  # NaN share of a target on a single date (outside the legitimate tail)
    max_constant_date_share: float = 0.5  # share of dates on which a feature may be cross-sectionally constant
    leak_corr: float = 0.95  # per-date |corr(feature, target)| above this is leakage
    max_abs_return_1d: float = 1.0  # |1-day return| bound (100%)
    label_tolerance: float = 1e-4  # |compounded 1-day targets - h-day target| allowed (return units)
    max_label_mismatch_share: float = 0.001  # share of checkable rows whose h-day target disagrees with the compounded 1-day ones
    max_excess_zero_share: float = 0.01  # h-day zero share may exceed 2 x the 1-day zero share by at most this
    min_head_std: float = 0.001  # per-horizon cross-sectional std of the point forecast
    min_loss: float = 0.0  # loss must be strictly above this
    ic_3ep: float = 0.01  # IC@1d after the 3-epoch checkpoint
    ic_10ep: float = 0.05  # IC@1d after 10 epochs
    sharpe_10ep: float = 0.1  # long-short Sharpe after 10 epochs
    oracle_fraction: float = 0.8  # on the synthetic default: IC@1d >= this x oracle IC
    gate_seed: int = 3289  # embedded default only: the slow gates train on the panel of this seed, drawn after every default was frozen (docs/decisions.md); -1 = data.synthetic.seed
    max_val_rising_epochs: int = 3  # val loss may rise at most this many consecutive epochs
    max_train_val_gap: float = 0.5  # |val - train| / train loss at the end
    gpu_util: float = 0.5  # median GPU utilization during a short run
    cuda_mem_tolerance_mb: float = 64.0  # allowed memory_allocated above the pre-run baseline
    smoke_stocks: int = 256  # model checks (keys, head spread, step, GAT effect, mini-train) use this many stocks per day, seeded, graph on them only; 0 = all
    mini_train_steps: int = 8  # steps of the smoke mini-train
    min_mini_train_decrease: float = 0.02  # mini-train: fixed-batch loss must fall by this share (healthy: 0.07-0.08)
    min_update_ratio: float = 1e-6  # training step / mini-train: mean ||dtheta|| / ||theta|| per step must exceed this
    min_graph_effect: float = 1e-3  # removing the GAT's edges must move the forecasts by this x their spread
    guard_every: int = 10  # training steps between two checks of the live guards (0 = guards off)
    guard_graph_every: int = 200  # training steps between two measurements of the graph path's effect
    guards: GuardsConfig = field(default_factory=GuardsConfig)  # the live guards of fit


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
