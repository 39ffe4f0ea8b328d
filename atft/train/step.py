"""The training step, the epoch and prediction: ``train_step``, ``train_epoch``, ``predict``, ``evaluate``.

``train_step`` is THE optimisation step: ``train_epoch`` calls it for every batch, and the smoke
suite's training-step and mini-train checks call the very same function, so a broken loop cannot
pass smoke. ``atft.train.fit`` orchestrates epochs, checkpoints and the run directory.

Failure modes made impossible here (design.md section 6):
1. the loss always reads ``output["predictions"]`` (MultiHorizonLoss raises otherwise) and has a
   gradient path; 2/3. horizon keys are checked against the contract; 5. NaN targets stay NaN
   (masked, never 0.0) in loss, metrics and prediction files; 6. evaluation uses the very same
   ``Prepared`` pipeline (normalizer, graph builder) as training.
Only Python floats are accumulated: nothing of a step stays referenced after it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from atft.data.batch import DayBatch
from atft.errors import HorizonMismatchError
from atft.eval.metrics import compute_metrics, per_date_ic
from atft.horizons import Horizons, metric_name
from atft.progress import Ticker, eta
from atft.train.guards import Guards
from atft.train.threads import ThreadGovernor


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's legacy global RNG."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _autocast(device: torch.device, bf16: bool) -> Any:
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@dataclass
class EpochProgress:
    """Where an epoch stands: the batches consumed and the running sums (what a mid-epoch
    checkpoint stores, so a resumed epoch ends with the same record as an uninterrupted one)."""

    batches: int = 0  # batches of the epoch's plan consumed (stepped or skipped)
    loss_sum: float = 0.0
    per_horizon_sum: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    samples: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "loss_sum": self.loss_sum, "per_horizon_sum": dict(self.per_horizon_sum),
                "steps": self.steps, "samples": self.samples, "skipped": self.skipped}


@dataclass
class EpochStats:
    """What one pass over a loader measured (Python numbers only)."""

    loss: float
    per_horizon: dict[str, float]
    steps: int
    samples: int
    seconds: float
    skipped_batches: int = 0
    batch_seconds: float = 0.0  # time spent waiting for the loader to produce batches
    interrupted: bool = False  # the epoch stopped early on a stop request (``progress`` says where)
    progress: EpochProgress = field(default_factory=EpochProgress)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class StepResult:
    """What one optimisation step measured (Python numbers only; no tensor is kept).

    ``skipped``: the batch had no valid target, nothing was stepped (``n_valid == 0``).
    """

    loss: float
    per_horizon: dict[str, float]
    n_valid: int
    skipped: bool = False


def train_step(model: torch.nn.Module, batch: DayBatch, loss_fn: Any, optimizer: torch.optim.Optimizer,
               *, scheduler: Any | None = None, grad_clip: float = 0.0, device: torch.device | str = "cpu",
               bf16: bool = False, guards: Guards | None = None) -> StepResult:
    """THE training step: forward, loss, backward, clip, optimizer and scheduler step.

    A batch whose targets are all missing is skipped (nothing stepped, ``skipped=True``): its loss
    carries no information. Every other step backpropagates a loss with a gradient path. With
    ``guards`` (``atft.train.guards``), the live guards read the step's own output, gradients and
    update (on guard steps only) and may raise ``GuardStop``.

    Raises:
        FloatingPointError: the loss is not finite (without guards; named with the fix).
        RuntimeError: the loss has no gradient path (without guards).
    """
    device = torch.device(device)
    batch = batch.to(device, non_blocking=True)
    with _autocast(device, bf16):
        out = model(batch)
        lo = loss_fn(out, batch)
    if lo.n_valid == 0:
        if guards is not None:
            guards.on_skipped()
        return StepResult(float("nan"), {}, 0, skipped=True)
    if not lo.total.requires_grad:
        if guards is not None:
            guards.on_no_grad_path()
        raise RuntimeError("the training loss has no gradient path to the parameters (a detached or constant "
                           "tensor). Fix: compute the loss from the model's predictions (output['predictions']).")
    watch = guards is not None and guards.due
    optimizer.zero_grad(set_to_none=True)
    lo.total.backward()
    if watch:
        guards.on_backward(model, out, batch)  # type: ignore[union-attr]
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if watch:
        guards.on_update(model)  # type: ignore[union-attr]
    loss_value = float(lo.total.detach())
    if guards is not None:
        guards.on_step_end(loss_value, model)
    elif not math.isfinite(loss_value):
        raise FloatingPointError(f"training loss became {loss_value}; "
                                 "lower train.lr or check the data (atft check-data).")
    return StepResult(loss_value, {k: float(v.detach()) for k, v in lo.per_horizon.items()}, int(lo.n_valid))


def train_epoch(
    model: torch.nn.Module,
    loader: Any,
    loss_fn: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    *,
    device: torch.device | str = "cpu",
    grad_clip: float = 0.0,
    bf16: bool = False,
    max_steps: int = 0,
    progress: Any | None = None,
    guards: Guards | None = None,
    governor: ThreadGovernor | None = None,
    ticker: Ticker | None = None,
    total_steps: int = 0,
    resume_from: EpochProgress | None = None,
    stop: Callable[[], bool] | None = None,
    after_step: Callable[[], None] | None = None,
) -> EpochStats:
    """One epoch of ``train_step`` over ``loader`` (an iterable of DayBatch).

    Batches in which every target is missing are skipped and counted (``train_step``); ``guards``
    watch every step (``atft.train.guards``); ``governor`` times them to pick the thread count
    (``atft.train.threads``); ``ticker`` logs a plain progress line (step, samples/s, loss, ETA)
    every ``train.log_every_s`` seconds for logs without a terminal (``total_steps`` for the ETA).
    ``resume_from`` continues an epoch a mid-epoch checkpoint left; ``stop()`` is asked after every
    batch and ends the epoch early (``interrupted``) when it says so; ``after_step()`` runs after
    every optimizer step (the weight average, ``atft.train.averaging``).
    """
    model.train()
    p = resume_from or EpochProgress()
    batches = loader.batches(p.batches) if hasattr(loader, "batches") else itertools.islice(loader, p.batches, None)
    interrupted = False
    t0 = time.perf_counter()
    wait = 0.0
    t_fetch = time.perf_counter()
    try:
        for batch in batches:
            wait += time.perf_counter() - t_fetch
            if max_steps and p.steps >= max_steps:
                break
            if governor is not None:
                governor.before_step()
            try:
                res = train_step(model, batch, loss_fn, optimizer, scheduler=scheduler, grad_clip=grad_clip,
                                 device=device, bf16=bf16, guards=guards)
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} (step {p.steps})") from None
            if governor is not None:
                governor.after_step(0 if res.skipped else batch.num_stocks)
            p.batches += 1
            if res.skipped:
                p.skipped += 1
            else:
                p.loss_sum += res.loss
                for k, v in res.per_horizon.items():
                    p.per_horizon_sum[k] = p.per_horizon_sum.get(k, 0.0) + v
                p.steps += 1
                p.samples += batch.num_stocks
                if after_step is not None:
                    after_step()
                if progress is not None:
                    progress.update(1)
                if ticker is not None:
                    ticker.tick(lambda s, done=p.steps, n=p.samples, mean=p.loss_sum / p.steps:
                                f"progress: step {done}/{total_steps or '?'}, {n / max(s, 1e-9):.0f} samples/s, "
                                f"loss {mean:.4f}, ETA {eta(done, total_steps, s)}")
            del batch
            if stop is not None and stop():  # a stop request (Ctrl-C, SIGTERM) honoured at a step boundary
                interrupted = True
                break
            if max_steps and p.steps >= max_steps:
                break  # before fetching (and, prefetching, producing) a batch that would not be stepped
            t_fetch = time.perf_counter()
    finally:  # a prefetching loader's worker is stopped and joined here (break, stop, errors)
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - t0
    n = max(p.steps, 1)
    return EpochStats(p.loss_sum / n if p.steps else float("nan"), {k: v / n for k, v in p.per_horizon_sum.items()},
                      p.steps, p.samples, seconds, p.skipped, wait, interrupted, p)


@dataclass
class EvalResult:
    """Loss, per-horizon metrics and the predictions frame of one split."""

    loss: float
    per_horizon_loss: dict[str, float]
    metrics: dict[str, dict[str, float]]  # horizon key -> metric name -> value
    predictions: pl.DataFrame  # Code, Date, target columns, pred_horizon_{h}d
    daily_ic: dict[str, np.ndarray] = field(default_factory=dict)  # horizon key -> per-date IC

    def flat(self, prefix: str) -> dict[str, float]:
        """``{prefix}/total_loss`` and ``{prefix}/{metric}_{h}d`` keys for logs and early stopping."""
        out = {f"{prefix}/total_loss": self.loss}
        for key, m in self.metrics.items():
            for name, v in m.items():
                out[metric_name(prefix, name, key)] = v
        return out


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, horizons: Horizons, *,
            device: torch.device | str = "cpu", bf16: bool = False,
            target_scale: Sequence[float] | None = None,
            loss_fn: Any | None = None) -> tuple[pl.DataFrame, float, dict[str, float]]:
    """Point forecasts of every batch as a frame (return units), and the mean loss if given.

    Shapes:
        per batch: point ``[N]`` per horizon -> rows of the frame; targets ``[N, H]`` raw.
    """
    device = torch.device(device)
    model.eval()
    scale = list(target_scale) if target_scale is not None else [1.0] * len(horizons)
    codes: list[str] = []
    dates: list[dt.date] = []
    preds: list[np.ndarray] = []
    tgts: list[np.ndarray] = []
    total, n, per_h = 0.0, 0, {}
    for batch in loader:
        batch_d = batch.to(device)
        with _autocast(device, bf16):
            out = model(batch_d)
        if not isinstance(out, dict) or not isinstance(out.get("point"), dict):
            got = sorted(map(str, out.keys())) if isinstance(out, dict) else type(out).__name__
            raise HorizonMismatchError(
                f"the model output must hold 'point' = {{'horizon_{{h}}d': [N]}} (and 'predictions'); "
                f"got {got}. Fix: return the whole output dict of ATFT_GAT_FAN.forward.")
        horizons.check_mapping(out["point"], "model point")
        if loss_fn is not None:
            lo = loss_fn(out, batch_d)
            if lo.n_valid:
                total += float(lo.total)
                n += 1
                for k, v in lo.per_horizon.items():
                    per_h[k] = per_h.get(k, 0.0) + float(v)
        p = torch.stack([out["point"][k].float() for k in horizons.keys], dim=1)  # [N, H]
        preds.append(p.cpu().numpy() * np.asarray(scale, dtype=np.float32))
        raw = batch.raw_targets if batch.raw_targets is not None else batch.targets
        tgts.append(raw.cpu().numpy())
        codes.extend(batch.codes)
        dates.extend(batch.row_dates())
    pred = np.concatenate(preds) if preds else np.zeros((0, len(horizons)), np.float32)
    tgt = np.concatenate(tgts) if tgts else np.zeros((0, len(horizons)), np.float32)
    cols: dict[str, Any] = {"Code": codes, "Date": dates}
    for j, name in enumerate(horizons.targets):
        cols[name] = tgt[:, j]
    for j, name in enumerate(horizons.pred_columns):
        cols[name] = pred[:, j]
    frame = pl.DataFrame(cols, schema_overrides={"Code": pl.String, "Date": pl.Date})
    # NaN targets stay missing: as null in the file, never 0.0
    frame = frame.with_columns([pl.col(t).fill_nan(None) for t in horizons.targets])
    frame = frame.sort("Date", "Code")
    return frame, (total / n if n else float("nan")), {k: v / max(n, 1) for k, v in per_h.items()}


def metrics_from_predictions(frame: pl.DataFrame, horizons: Horizons, min_stocks: int, *, cost_bps: float = 0.0
                             ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Every metric recomputed from a predictions frame (what anyone can do from the parquet).

    ``cost_bps`` (``train.cost_bps``): cost per unit of turnover of the long-short portfolio in
    basis points, giving ``sharpe_net``; turnover is measured from the frame's codes.
    """
    date_id = frame["Date"].to_physical().to_numpy()
    codes = frame["Code"].to_numpy()
    out: dict[str, dict[str, float]] = {}
    daily: dict[str, np.ndarray] = {}
    for key, tcol, pcol in zip(horizons.keys, horizons.targets, horizons.pred_columns, strict=True):
        y = frame[tcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        p = frame[pcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        out[key] = {k: float(v) for k, v in compute_metrics(p, y, date_id, min_stocks=min_stocks, codes=codes,
                                                             cost=cost_bps / 1e4).items()}
        daily[key] = np.asarray(per_date_ic(p, y, date_id, min_stocks=min_stocks).values, dtype=np.float64)
    return out, daily


def evaluate(model: torch.nn.Module, loader: Any, loss_fn: Any, horizons: Horizons, *,
             device: torch.device | str = "cpu", bf16: bool = False, min_stocks: int = 20,
             target_scale: Sequence[float] | None = None, cost_bps: float = 0.0) -> EvalResult:
    """Loss and per-day metrics of ``model`` on ``loader`` (same preprocessing as training)."""
    frame, loss, per_h = predict(model, loader, horizons, device=device, bf16=bf16,
                                 target_scale=target_scale, loss_fn=loss_fn)
    metrics, daily = metrics_from_predictions(frame, horizons, min_stocks, cost_bps=cost_bps)
    return EvalResult(loss, per_h, metrics, frame, daily)


def format_epoch_lines(epoch: int, train: EpochStats, val: EvalResult, lr: float) -> list[str]:
    """Log lines the recovery plan greps for (``loss|Loss|yhat_std|SCALE``)."""
    lines = [
        f"epoch {epoch}: train/total_loss: {train.loss:.4f} val/total_loss: {val.loss:.4f} "
        f"lr={lr:.3g} steps={train.steps} samples/s={train.samples_per_s:.1f} "
        f"skipped_batches={train.skipped_batches}",
    ]
    for key, m in val.metrics.items():
        lines.append(
            f"epoch {epoch}: val {key}: yhat_std={m['yhat_std']:.4f} SCALE(yhat/y)={m['scale']:.4g} "
            f"IC={m['ic']:.4f} RankIC={m['rank_ic']:.4f} ICIR={m['icir']:.3f} "
            f"Sharpe={m['sharpe']:.3f} hit={m['hit_rate']:.3f} n_dates={int(m['n_dates'])}"
        )
    return lines


