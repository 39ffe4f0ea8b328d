"""``fit``: a whole training run (run directory, epochs, early stopping, checkpoints, resume).

Failure mode 14 (silent limits): nothing ends a run early except ``train.max_epochs``, early
stopping (``train.patience``) and ``train.max_steps_per_epoch``, all config values that are
logged. The epoch's optimisation is ``atft.train.step.train_epoch`` (THE step function); fit
returns metrics only: the synthetic oracle is added by the CLI (``atft.cli.train``), never read
here. After ``fit`` returns nothing of the run stays referenced: only Python floats are kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atft.config import Config, describe, to_yaml
from atft.data.pipeline import Prepared
from atft.errors import ConfigError, InputError
from atft.eval.inference import ic_bootstrap_ci
from atft.eval.metrics import compute_metrics
from atft.horizons import Horizons, metric_name
from atft.io import atomic_path, write_json, write_text
from atft.progress import Ticker
from atft.train.guards import Guards, GuardStop
from atft.train.memory import release_cuda_memory
from atft.train.step import (
    evaluate,
    format_epoch_lines,
    resolve_device,
    seed_everything,
    train_epoch,
)
from atft.train.threads import configure_threads

log = logging.getLogger("atft.train")

EpochCallback = Callable[[int, dict[str, Any]], None]


RECORD_KEYS = ("epoch", "train/total_loss", "lr", "train/samples_per_s", "train/seconds",
               "train/batch_seconds", "train/skipped_batches", "val/total_loss")


def record_keys(horizons: Horizons) -> list[str]:
    """Every key of an epoch record (``metrics.jsonl``): what ``train.early_stopping_metric`` may name."""
    empty = np.zeros(0, dtype=np.float64)
    names = list(compute_metrics(empty, empty, np.zeros(0, dtype=np.int64), min_stocks=2))
    keys = list(RECORD_KEYS)
    for key in horizons.keys:
        keys.append(metric_name("train", "loss", key))
        keys.extend(metric_name("val", name, key) for name in names)
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


def _target_scale(prepared: Prepared) -> list[float]:
    norm = prepared.normalizer
    scale = getattr(norm, "target_scale", None)
    if scale is None:
        return [1.0] * len(prepared.horizons)
    return [float(s) for s in np.asarray(scale).reshape(-1)]


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


def _guards(cfg: Config, prepared: Prepared, model: torch.nn.Module, step: int,
            resumed: Path | None) -> Guards | None:
    """The live guards of the run (``atft.train.guards``); None when ``health.guard_every`` is 0."""
    if cfg.health.guard_every <= 0:
        return None
    parts = model.parts() if hasattr(model, "parts") else dict(model.named_children())
    held = prepared.day_batch("train", 0) if cfg.graph_on else None
    guards = Guards(cfg.health, prepared.horizons.keys, _target_scale(prepared), parts, held=held, step=step)
    if resumed is not None and (resumed / "health.json").exists():
        guards.resume_from(json.loads((resumed / "health.json").read_text()))
    return guards


def _write_guards(run_dir: Path, guards: Guards | None) -> None:
    """``runs/<id>/health.json``: every guard's rule and series so far."""
    if guards is not None:
        write_json(run_dir / "health.json", guards.series())


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d_%H%M%S_%f")


def fit(cfg: Config, prepared: Prepared | None = None, *, resume: str | Path | None = None,
        run_id: str | None = None, callbacks: Sequence[EpochCallback] = ()) -> FitResult:
    """Train per ``cfg``; write ``runs/<run_id>/`` and ``_logs/training/train_<run_id>.log``.

    Args:
        cfg: the effective config (env flags already applied by ``atft.config.load``).
        prepared: an ``atft.data.pipeline.Prepared`` to reuse; built from cfg when None
            (``atft.train.prepare.prepare``).
        resume: a run directory (or run id under ``train.run_dir``) to continue from ``last.pt``.
        run_id: name of the run directory (default: a timestamp).
        callbacks: called as ``cb(epoch, record)`` after each epoch's checkpoint is written.
    """
    from atft.model.atft_gat_fan import ATFT_GAT_FAN
    from atft.train.checkpoint import load_checkpoint, normalizer_from, save_checkpoint
    from atft.train.loss import MultiHorizonLoss
    from atft.train.prepare import prepare
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
        governor = configure_threads(int(t.num_threads), bool(t.single_process))
        device = resolve_device(t.device)
        log.info("run %s on %s; log %s", run_id, device, log_path)
        log.info("%s\n  full effective config: %s", describe(cfg), run_dir / "config.yaml")
        if not cfg.graph_on:
            log.warning("graph path (GAT) is OFF for this run: model.use_gat=%s graph.enabled=%s",
                        cfg.model.use_gat, cfg.graph.enabled)
        if t.max_steps_per_epoch:
            log.warning("train.max_steps_per_epoch=%d caps every epoch", t.max_steps_per_epoch)
        write_text(run_dir / "config.yaml", to_yaml(cfg))

        if prepared is None:  # a resumed run applies the normalizer it was trained with
            stored = load_checkpoint(run_dir / "checkpoints" / "last.pt") if resume is not None else None
            prepared = prepare(cfg, normalizer=normalizer_from(stored) if stored else None)
            del stored
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
        guards = _guards(cfg, prepared, model, start_epoch * steps_per_epoch, run_dir if resume is not None else None)
        stopped_early = False
        use_bar = t.progress and sys.stdout.isatty() and sys.stderr.isatty()
        for epoch in range(start_epoch, t.max_epochs):
            train_loader.set_epoch(epoch)
            bar, ticker = None, None
            if use_bar:
                from tqdm import tqdm
                bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False)
            elif t.progress and t.log_every_s > 0:  # no terminal (CI logs, nohup): a plain line every log_every_s
                ticker = Ticker(logging.getLogger("atft.train"), t.log_every_s)
            try:
                stats = train_epoch(model, train_loader, loss_fn, optimizer, scheduler, device=device,
                                    grad_clip=t.grad_clip, bf16=t.bf16, max_steps=t.max_steps_per_epoch,
                                    progress=bar, guards=guards, governor=governor, ticker=ticker,
                                    total_steps=steps_per_epoch)
                if guards is not None:
                    guards.on_epoch_end(epoch, stats.steps, stats.loss)
            except GuardStop:
                _write_guards(run_dir, guards)
                if not (run_dir / "checkpoints" / "last.pt").exists():  # keep the weights to inspect
                    save_checkpoint(run_dir / "checkpoints" / "last.pt", model, cfg, prepared.normalizer,
                                    extra={"epoch": epoch - 1, "stopped_by_guard": True})
                raise
            finally:
                if bar is not None:
                    bar.close()
            val = evaluate(model, val_loader, loss_fn, horizons, device=device, bf16=t.bf16,
                           min_stocks=cfg.data.min_stocks, target_scale=scale, cost_bps=t.cost_bps)
            lr = float(optimizer.param_groups[0]["lr"])
            record: dict[str, float] = {"epoch": epoch, "train/total_loss": stats.loss, "lr": lr,
                                        "train/samples_per_s": stats.samples_per_s,
                                        "train/seconds": stats.seconds,
                                        "train/batch_seconds": stats.batch_seconds,
                                        "train/skipped_batches": stats.skipped_batches}
            record.update({metric_name("train", "loss", k): v for k, v in stats.per_horizon.items()})
            record.update(val.flat("val"))
            history.append(record)
            for line in format_epoch_lines(epoch, stats, val, lr):
                log.info(line)
            check_early_stopping_metric(t.early_stopping_metric, list(record))
            watched = record[t.early_stopping_metric]
            improved = _better(watched, best_metric, t.early_stopping_mode)
            if improved:
                best_metric, best_epoch, bad_epochs = watched, epoch, 0
                save_checkpoint(run_dir / "checkpoints" / "best.pt", model, cfg, prepared.normalizer,
                                extra={"epoch": epoch, "metric": watched})
                with atomic_path(run_dir / "predictions_val.parquet") as tmp:
                    val.predictions.write_parquet(tmp)
            else:
                bad_epochs += 1
            save_checkpoint(run_dir / "checkpoints" / "last.pt", model, cfg, prepared.normalizer, extra={
                "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                **_rng_state(), "best_metric": best_metric, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history})
            _write_history(metrics_path, history)
            _write_guards(run_dir, guards)
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
        final: dict[str, Any] = {"run_id": run_id, "data": prepared.source, "best_epoch": best_epoch,
                                 "early_stopping_metric": t.early_stopping_metric,
                                 "best_metric": best_metric}
        for split in ("val", "test"):
            loader = prepared.loader(split, shuffle=False)
            res = evaluate(model, loader, loss_fn, horizons, device=device, bf16=t.bf16,
                           min_stocks=cfg.data.min_stocks, target_scale=scale, cost_bps=t.cost_bps)
            with atomic_path(run_dir / f"predictions_{split}.parquet") as tmp:
                res.predictions.write_parquet(tmp)
            block: dict[str, Any] = {"total_loss": res.loss}
            for key, m in res.metrics.items():
                lo, hi = ic_bootstrap_ci(res.daily_ic[key], seed=t.seed)
                block[key] = {**m, "ic_ci95": [lo, hi]}
            final[split] = block
            del res, loader
        write_json(run_dir / "metrics.json", final)
        del model, optimizer, scheduler, loss_fn, train_loader, val_loader
        release_cuda_memory()
        return FitResult(run_dir, history, best_epoch, best_metric, final, stopped_early)
    finally:
        logging.getLogger("atft").removeHandler(handler)
        handler.close()
