"""Training loop: ``train_epoch``, ``evaluate``, ``fit``.

Failure modes made impossible here (design.md section 6):
1. the loss always reads ``output["predictions"]`` (MultiHorizonLoss raises otherwise) and has a
   gradient path; 2/3. horizon keys are checked against the contract; 5. NaN targets stay NaN
   (masked, never 0.0) in loss, metrics and prediction files; 6. evaluation uses the very same
   ``Prepared`` pipeline (normalizer, graph builder) as training; 14. nothing ends a run early
   except ``train.max_epochs``, early stopping (``train.patience``) and
   ``train.max_steps_per_epoch``, all config values that are logged.
After ``fit`` returns nothing of the run stays referenced: only Python floats are accumulated.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from atft.config import Config, to_yaml
from atft.errors import ConfigError, HorizonMismatchError, InputError
from atft.horizons import Horizons
from atft.io import atomic_path, write_json, write_text
from atft.train.memory import release_cuda_memory
from atft.train.metrics import compute_metrics, ic_bootstrap_ci, per_date_ic

log = logging.getLogger("atft.train")

EpochCallback = Callable[[int, dict[str, Any]], None]


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
class EpochStats:
    """What one pass over a loader measured (Python numbers only)."""

    loss: float
    per_horizon: dict[str, float]
    steps: int
    samples: int
    seconds: float
    skipped_batches: int = 0
    batch_seconds: float = 0.0  # time spent waiting for the loader to produce batches

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


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
) -> EpochStats:
    """One epoch of optimisation over ``loader`` (an iterable of DayBatch).

    Batches in which every target is missing are skipped and counted (their loss would carry
    no information); every other step backpropagates a loss with a gradient path.
    """
    device = torch.device(device)
    model.train()
    total, n_steps, n_samples, skipped = 0.0, 0, 0, 0
    per_h: dict[str, float] = {}
    t0 = time.perf_counter()
    wait = 0.0
    t_fetch = time.perf_counter()
    for batch in loader:
        wait += time.perf_counter() - t_fetch
        if max_steps and n_steps >= max_steps:
            break
        batch = batch.to(device, non_blocking=True)
        with _autocast(device, bf16):
            out = model(batch)
            lo = loss_fn(out, batch)
        if lo.n_valid == 0:
            skipped += 1
            t_fetch = time.perf_counter()
            continue
        optimizer.zero_grad(set_to_none=True)
        lo.total.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_value = float(lo.total.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {n_steps}; "
                                     "lower train.lr or check the data (atft check-data).")
        total += loss_value
        for k, v in lo.per_horizon.items():
            per_h[k] = per_h.get(k, 0.0) + float(v.detach())
        n_steps += 1
        n_samples += batch.num_stocks
        del out, lo, batch
        if progress is not None:
            progress.update(1)
        t_fetch = time.perf_counter()
    seconds = time.perf_counter() - t0
    n = max(n_steps, 1)
    return EpochStats(total / n if n_steps else float("nan"), {k: v / n for k, v in per_h.items()},
                      n_steps, n_samples, seconds, skipped, wait)


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
            suffix = key.removeprefix("horizon_")
            for name, v in m.items():
                out[f"{prefix}/{name}_{suffix}"] = v
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


def metrics_from_predictions(frame: pl.DataFrame, horizons: Horizons, min_stocks: int
                             ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Every metric recomputed from a predictions frame (what anyone can do from the parquet)."""
    date_id = frame["Date"].to_physical().to_numpy()
    out: dict[str, dict[str, float]] = {}
    daily: dict[str, np.ndarray] = {}
    for key, tcol, pcol in zip(horizons.keys, horizons.targets, horizons.pred_columns, strict=True):
        y = frame[tcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        p = frame[pcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        out[key] = {k: float(v) for k, v in compute_metrics(p, y, date_id, min_stocks=min_stocks).items()}
        daily[key] = np.asarray(per_date_ic(p, y, date_id, min_stocks=min_stocks).values, dtype=np.float64)
    return out, daily


def evaluate(model: torch.nn.Module, loader: Any, loss_fn: Any, horizons: Horizons, *,
             device: torch.device | str = "cpu", bf16: bool = False, min_stocks: int = 20,
             target_scale: Sequence[float] | None = None) -> EvalResult:
    """Loss and per-day metrics of ``model`` on ``loader`` (same preprocessing as training)."""
    frame, loss, per_h = predict(model, loader, horizons, device=device, bf16=bf16,
                                 target_scale=target_scale, loss_fn=loss_fn)
    metrics, daily = metrics_from_predictions(frame, horizons, min_stocks)
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


RECORD_KEYS = ("epoch", "train/total_loss", "lr", "train/samples_per_s", "train/seconds",
               "train/batch_seconds", "train/skipped_batches", "val/total_loss")


def record_keys(horizons: Horizons) -> list[str]:
    """Every key of an epoch record (``metrics.jsonl``): what ``train.early_stopping_metric`` may name."""
    empty = np.zeros(0, dtype=np.float64)
    names = list(compute_metrics(empty, empty, np.zeros(0, dtype=np.int64), min_stocks=2))
    keys = list(RECORD_KEYS)
    for key in horizons.keys:
        suffix = key.removeprefix("horizon_")
        keys.append(f"train/loss_{suffix}")
        keys.extend(f"val/{name}_{suffix}" for name in names)
    return keys


def check_early_stopping_metric(name: str, available: Sequence[str]) -> None:
    """Raise ConfigError naming the available keys when ``name`` is not a logged metric."""
    if name not in available:
        raise ConfigError(f"train.early_stopping_metric '{name}' is not a logged metric. Fix: use one "
                          f"of the available keys: {sorted(available)}.")


def _write_history(path: Path, history: Sequence[dict[str, float]]) -> None:
    """``metrics.jsonl``: one JSON line per epoch so far, rewritten atomically (resume-safe)."""
    lines = [json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
             for rec in history]
    write_text(path, "".join(line + "\n" for line in lines))


def _rng_state() -> dict[str, Any]:
    """CPU (and CUDA, when initialized) RNG state for the resume checkpoint."""
    state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(ck: dict[str, Any]) -> None:
    torch.set_rng_state(ck["torch_rng"])
    cuda = ck.get("cuda_rng")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@dataclass
class FitResult:
    """What a run produced: paths and Python numbers (no tensors, no model, no optimizer)."""

    run_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    final: dict[str, Any]
    stopped_early: bool = False


def _target_scale(prepared: Any) -> list[float]:
    norm = prepared.normalizer
    scale = getattr(norm, "target_scale", None)
    if scale is None:
        return [1.0] * len(prepared.horizons)
    return [float(s) for s in np.asarray(scale).reshape(-1)]


def _oracle(cfg: Config, prepared: Any) -> dict[str, Any] | None:
    """The synthetic sidecar's oracle and no-graph ICs per horizon, for the data of this run.

    None for data without a sidecar, or when ``prepared`` holds a panel of another shape than
    the sidecar describes (a ``Prepared`` built from another path than ``cfg.data.path``).
    """
    from atft.train.run import oracle_for

    meta = oracle_for(cfg, generate=False)
    if not meta or "oracle_ic" not in meta:
        return None
    shape = meta.get("shape", {})
    panel = prepared.panel
    if (shape.get("stocks"), shape.get("days")) != (panel.num_stocks, panel.num_dates):
        return None
    return {k: meta[k] for k in ("oracle_ic", "no_graph_ic") if k in meta}


def _better(a: float, b: float, mode: str) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if mode == "max" else a < b


def _attach_log(cfg: Config, run_id: str) -> tuple[logging.Handler, Path]:
    log_dir = Path(cfg.train.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"train_{run_id}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("atft")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler, path


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d_%H%M%S_%f")


def fit(cfg: Config, prepared: Any | None = None, *, resume: str | Path | None = None,
        run_id: str | None = None, callbacks: Sequence[EpochCallback] = ()) -> FitResult:
    """Train per ``cfg``; write ``runs/<run_id>/`` and ``_logs/training/train_<run_id>.log``.

    Args:
        cfg: the effective config (env flags already applied by ``atft.config.load``).
        prepared: an ``atft.data.pipeline.Prepared`` to reuse; built from cfg when None.
        resume: a run directory (or run id under ``train.run_dir``) to continue from ``last.pt``.
        run_id: name of the run directory (default: a timestamp).
        callbacks: called as ``cb(epoch, record)`` after each epoch's checkpoint is written.
    """
    from atft.data.pipeline import prepare
    from atft.model.atft_gat_fan import ATFT_GAT_FAN
    from atft.model.checkpoint import load_checkpoint, save_checkpoint
    from atft.train.loss import MultiHorizonLoss
    from atft.train.schedule import warmup_cosine

    t = cfg.train
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.exists():
            run_dir = Path(t.run_dir) / str(resume)
        if not (run_dir / "checkpoints" / "last.pt").exists():
            raise InputError(f"cannot resume: {run_dir}/checkpoints/last.pt not found. "
                             "Fix: pass a run directory (or run id under train.run_dir) that wrote last.pt.")
        run_id = run_dir.name
    else:
        run_id = run_id or new_run_id()
        run_dir = Path(t.run_dir) / run_id
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    handler, log_path = _attach_log(cfg, run_id)
    try:
        if t.single_process or t.num_threads:
            torch.set_num_threads(1 if t.single_process else t.num_threads)
        device = resolve_device(t.device)
        log.info("run %s on %s; log %s", run_id, device, log_path)
        log.info("effective config:\n%s", to_yaml(cfg))
        if not (cfg.model.use_gat and cfg.graph.enabled):
            log.warning("graph path (GAT) is OFF for this run: model.use_gat=%s graph.enabled=%s",
                        cfg.model.use_gat, cfg.graph.enabled)
        if t.max_steps_per_epoch:
            log.warning("train.max_steps_per_epoch=%d caps every epoch", t.max_steps_per_epoch)
        write_text(run_dir / "config.yaml", to_yaml(cfg))

        prepared = prepared if prepared is not None else prepare(cfg)
        horizons: Horizons = prepared.horizons
        check_early_stopping_metric(t.early_stopping_metric, record_keys(horizons))
        seed_everything(t.seed)
        model = ATFT_GAT_FAN.from_config(cfg, prepared.num_features).to(device)
        loss_fn = MultiHorizonLoss.from_config(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        train_loader = prepared.loader("train", shuffle=True)
        val_loader = prepared.loader("val", shuffle=False)
        steps_per_epoch = len(train_loader)
        if t.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
        scheduler = warmup_cosine(optimizer, t.warmup_steps, steps_per_epoch * t.max_epochs, t.min_lr_ratio)
        scale = _target_scale(prepared)

        history: list[dict[str, float]] = []
        start_epoch, best_metric, best_epoch, bad_epochs = 0, float("nan"), -1, 0
        if resume is not None:
            ck = load_checkpoint(run_dir / "checkpoints" / "last.pt")
            model.load_state_dict(ck["state_dict"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            _set_rng_state(ck)
            start_epoch = int(ck["epoch"]) + 1
            best_metric, best_epoch = float(ck["best_metric"]), int(ck["best_epoch"])
            bad_epochs = int(ck["bad_epochs"])
            history = [dict(h) for h in ck["history"]]
            log.info("resumed %s at epoch %d", run_dir, start_epoch)
            del ck

        metrics_path = run_dir / "metrics.jsonl"
        stopped_early = False
        use_bar = t.progress and sys.stderr.isatty()
        for epoch in range(start_epoch, t.max_epochs):
            train_loader.set_epoch(epoch)
            bar = None
            if use_bar:
                from tqdm import tqdm
                bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False)
            stats = train_epoch(model, train_loader, loss_fn, optimizer, scheduler, device=device,
                                grad_clip=t.grad_clip, bf16=t.bf16, max_steps=t.max_steps_per_epoch,
                                progress=bar)
            if bar is not None:
                bar.close()
            val = evaluate(model, val_loader, loss_fn, horizons, device=device, bf16=t.bf16,
                           min_stocks=cfg.data.min_stocks, target_scale=scale)
            lr = float(optimizer.param_groups[0]["lr"])
            record: dict[str, float] = {"epoch": epoch, "train/total_loss": stats.loss, "lr": lr,
                                        "train/samples_per_s": stats.samples_per_s,
                                        "train/seconds": stats.seconds,
                                        "train/batch_seconds": stats.batch_seconds,
                                        "train/skipped_batches": stats.skipped_batches}
            record.update({f"train/loss_{k.removeprefix('horizon_')}": v for k, v in stats.per_horizon.items()})
            record.update(val.flat("val"))
            history.append(record)
            for line in format_epoch_lines(epoch, stats, val, lr):
                log.info(line)
            check_early_stopping_metric(t.early_stopping_metric, list(record))
            watched = record[t.early_stopping_metric]
            improved = _better(watched, best_metric, t.early_stopping_mode)
            if improved:
                best_metric, best_epoch, bad_epochs = watched, epoch, 0
                save_checkpoint(run_dir / "checkpoints" / "best.pt", model, cfg,
                                extra={"epoch": epoch, "metric": watched})
                with atomic_path(run_dir / "predictions_val.parquet") as tmp:
                    val.predictions.write_parquet(tmp)
            else:
                bad_epochs += 1
            save_checkpoint(run_dir / "checkpoints" / "last.pt", model, cfg, extra={
                "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                **_rng_state(), "best_metric": best_metric, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history})
            _write_history(metrics_path, history)
            del val
            for cb in callbacks:
                cb(epoch, record)
            if t.patience and bad_epochs >= t.patience:
                log.info("early stopping at epoch %d: %s did not improve for %d epochs (train.patience=%d; "
                         "best %.6g at epoch %d, mode %s)", epoch, t.early_stopping_metric, bad_epochs,
                         t.patience, best_metric, best_epoch, t.early_stopping_mode)
                stopped_early = True
                break

        # final evaluation with the best weights
        best_path = run_dir / "checkpoints" / "best.pt"
        if best_path.exists():
            model.load_state_dict(load_checkpoint(best_path)["state_dict"])
        final: dict[str, Any] = {"run_id": run_id, "best_epoch": best_epoch,
                                 "early_stopping_metric": t.early_stopping_metric,
                                 "best_metric": best_metric}
        for split in ("val", "test"):
            loader = prepared.loader(split, shuffle=False)
            res = evaluate(model, loader, loss_fn, horizons, device=device, bf16=t.bf16,
                           min_stocks=cfg.data.min_stocks, target_scale=scale)
            with atomic_path(run_dir / f"predictions_{split}.parquet") as tmp:
                res.predictions.write_parquet(tmp)
            block: dict[str, Any] = {"total_loss": res.loss}
            for key, m in res.metrics.items():
                lo, hi = ic_bootstrap_ci(res.daily_ic[key], seed=t.seed)
                block[key] = {**m, "ic_ci95": [lo, hi]}
            final[split] = block
            del res, loader
        oracle = _oracle(cfg, prepared)
        if oracle:
            final["oracle"] = oracle
        write_json(run_dir / "metrics.json", final)
        del model, optimizer, scheduler, loss_fn, train_loader, val_loader
        release_cuda_memory()
        return FitResult(run_dir, history, best_epoch, best_metric, final, stopped_early)
    finally:
        logging.getLogger("atft").removeHandler(handler)
        handler.close()
