"""``fit``: a whole training run (run directory, epochs, early stopping, checkpoints, resume).

Failure mode 14 (silent limits): nothing ends a run early except ``train.max_epochs``, early
stopping (``train.patience``), ``train.max_steps_per_epoch`` (all logged), a live guard
(``atft.train.guards``) and a stop request (Ctrl-C / SIGTERM, ``atft.train.interrupt``). The
epoch's optimisation is ``atft.train.step.train_epoch`` (THE step function); fit returns metrics
only: the synthetic oracle is added by the CLI (``atft.cli.train``), never read here.

Nothing half-written: the data is prepared before the run directory exists; a run that fails or
is interrupted before its first checkpoint leaves no run directory (its log keeps the error); an
interrupt after it saves a mid-epoch ``last.pt`` that ``--resume`` continues exactly. After
``fit`` returns nothing of the run stays referenced: only Python floats are kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atft.config import Config, describe, to_yaml
from atft.data.panel import Panel
from atft.data.pipeline import Prepared
from atft.errors import InputError
from atft.eval.inference import ic_bootstrap_ci
from atft.io import atomic_path, write_json, write_text
from atft.progress import Ticker
from atft.train.averaging import WeightAverage
from atft.train.distributed import AgreedStop, Dist, DistributedLoss, rank_seed, session
from atft.train.guards import Guards, GuardStop
from atft.train.interrupt import RunInterrupted
from atft.train.memory import release_cuda_memory
from atft.train.records import (
    attach_log,
    check_early_stopping_metric,
    epoch_record,
    record_keys,
    rng_state,
    set_rng_state,
    write_guards,
    write_history,
)
from atft.train.step import (
    EpochProgress,
    evaluate,
    format_epoch_lines,
    resolve_device,
    seed_everything,
    train_epoch,
)
from atft.train.threads import configure_threads

log = logging.getLogger("atft.train")

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class FitResult:
    """What a run produced: paths and Python numbers (no tensors, no model, no optimizer)."""

    run_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    final: dict[str, Any]
    stopped_early: bool = False


@dataclass
class _State:
    """Where a run stands between epochs (restored from ``last.pt`` on resume)."""

    start_epoch: int = 0
    best_metric: float = float("nan")
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    partial: EpochProgress | None = None  # a mid-epoch checkpoint's position in its epoch


def _target_scale(prepared: Prepared) -> list[float]:
    scale = getattr(prepared.normalizer, "target_scale", None)
    if scale is None:
        return [1.0] * len(prepared.horizons)
    return [float(s) for s in np.asarray(scale).reshape(-1)]


def _better(a: float, b: float, mode: str) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if mode == "max" else a < b


def _guards(cfg: Config, prepared: Prepared, model: torch.nn.Module, step: int,
            resumed: Path | None, defer: bool) -> Guards | None:
    """The live guards of the run (``atft.train.guards``); None when ``health.guard_every`` is 0."""
    if cfg.health.guard_every <= 0:
        return None
    parts = model.parts() if hasattr(model, "parts") else dict(model.named_children())
    held = prepared.day_batch("train", 0) if cfg.graph_on else None
    guards = Guards(cfg.health, prepared.horizons.keys, _target_scale(prepared), parts, held=held, step=step,
                    defer=defer)
    if resumed is not None and (resumed / "health.json").exists():
        guards.resume_from(json.loads((resumed / "health.json").read_text()))
    return guards


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d_%H%M%S_%f")


def _run_dir(cfg: Config, resume: str | Path | None, run_id: str | None) -> tuple[Path, str]:
    t = cfg.train
    if resume is None:
        run_id = run_id or new_run_id()
        return Path(t.run_dir) / run_id, run_id
    run_dir = Path(resume)
    if not run_dir.exists():
        run_dir = Path(t.run_dir) / str(resume)
    if not (run_dir / "checkpoints" / "last.pt").exists():
        raise InputError(f"cannot resume: {run_dir}/checkpoints/last.pt not found. "
                         "Fix: pass a run directory (or run id under train.run_dir) that wrote last.pt.")
    return run_dir, run_dir.name


def _restore(ck: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any, ctx: Dist,
             average: WeightAverage | None) -> _State:
    """The run's state from ``last.pt``; each rank of a data-parallel run takes its own RNG state and
    epoch position (``ranks``), so the same number of processes must resume it; the weight average
    continues from the saved one (the same ``train.ema_decay`` required)."""
    if int(ck.get("world_size", 1)) != ctx.world_size:
        raise InputError(f"cannot resume: the run was trained by {ck.get('world_size', 1)} process(es), this is "
                         f"{ctx.world_size}. Fix: resume with torchrun --nproc_per_node {ck.get('world_size', 1)} "
                         f"(atft train --nproc {ck.get('world_size', 1)}).")
    if ctx.active:
        ck = {**ck, **ck["ranks"][ctx.rank]}  # this rank's RNG state and mid-epoch position
    saved = float(ck["ema"]["decay"]) if ck.get("ema") is not None else 0.0
    if saved != (average.decay if average is not None else 0.0):
        raise InputError(f"cannot resume: the run was trained with train.ema_decay={saved}, this config has "
                         f"{average.decay if average is not None else 0.0}. Fix: resume with train.ema_decay={saved}.")
    if average is not None:
        average.load_state_dict(ck["ema"])
    model.load_state_dict(ck["state_dict"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    set_rng_state(ck)
    mid = ck.get("mid_epoch")
    return _State(start_epoch=int(ck["epoch"]) + (0 if mid else 1), best_metric=float(ck["best_metric"]),
                  best_epoch=int(ck["best_epoch"]), bad_epochs=int(ck["bad_epochs"]),
                  history=[dict(h) for h in ck["history"]], partial=EpochProgress(**mid) if mid else None)


def fit(cfg: Config, prepared: Prepared | None = None, *, resume: str | Path | None = None,
        run_id: str | None = None, callbacks: Sequence[EpochCallback] = (),
        stop: Callable[[], bool] | None = None, panel: Panel | None = None) -> FitResult:
    """Train per ``cfg``; write ``runs/<run_id>/`` and ``_logs/training/train_<run_id>.log``.

    Args:
        cfg: the effective config (env flags already applied by ``atft.config.load``).
        prepared: an ``atft.data.pipeline.Prepared`` to reuse; built from cfg when None
            (``atft.train.prepare.prepare``).
        resume: a run directory (or run id under ``train.run_dir``) to continue from ``last.pt``
            (an epoch's end or a mid-epoch stop).
        run_id: name of the run directory (default: a timestamp).
        callbacks: called as ``cb(epoch, record)`` after each epoch's checkpoint is written.
        stop: asked after every step; True saves a mid-epoch ``last.pt`` and raises
            ``RunInterrupted`` (``atft.train.interrupt.StopRequest`` answers it on Ctrl-C).
        panel: the dataset's panel when the caller loaded and checked it already (``atft train``
            does, before torch is imported); used when ``prepared`` is None.

    Raises:
        GuardStop: a live guard stopped the run (``last.pt`` and ``health.json`` kept).
        RunInterrupted: ``stop()`` said so (resumable when ``saved``).

    Under ``torchrun`` (``atft.train.distributed``) every process calls ``fit``: the days are
    sharded over the ranks, DDP averages the gradients, rank 0 validates, decides and writes the
    run directory and the log, and ``callbacks`` run on every rank with rank 0's record.
    """
    with session(cfg.train.device) as ctx:
        return _fit(cfg, prepared, ctx, resume=resume, run_id=run_id, callbacks=callbacks, stop=stop, panel=panel)


def _fit(cfg: Config, prepared: Prepared | None, ctx: Dist, *, resume: str | Path | None, run_id: str | None,
         callbacks: Sequence[EpochCallback], stop: Callable[[], bool] | None, panel: Panel | None) -> FitResult:
    """``fit`` in one process of ``ctx`` (a single process: ``Dist()``, every collective the identity)."""
    from atft.model.atft_gat_fan import ATFT_GAT_FAN
    from atft.train.checkpoint import load_checkpoint, normalizer_from, save_checkpoint
    from atft.train.loss import MultiHorizonLoss
    from atft.train.prepare import prepare
    from atft.train.schedule import warmup_cosine

    t = cfg.train
    if resume is None:  # every rank names the same run: rank 0's
        run_id = ctx.broadcast(run_id or new_run_id())
    run_dir, run_id = _run_dir(cfg, resume, run_id)
    last_pt = run_dir / "checkpoints" / "last.pt"
    created = ctx.is_main and not run_dir.exists()
    handler, log_path = attach_log(cfg, run_id) if ctx.is_main else (None, None)
    agreed = AgreedStop(stop, ctx) if ctx.active else None
    stop = agreed or stop
    try:
        governor = configure_threads(int(t.num_threads), bool(t.single_process), ctx.world_size)
        device = ctx.device if ctx.active else resolve_device(t.device)
        log.info("run %s on %s; log %s", run_id, device, log_path)
        if ctx.active:
            log.info(ctx.describe())
        log.info("%s\n  full effective config: %s", describe(cfg), run_dir / "config.yaml")
        if not cfg.graph_on:
            log.warning("graph path (GAT) is OFF for this run: model.use_gat=%s graph.enabled=%s",
                        cfg.model.use_gat, cfg.graph.enabled)
        if t.max_steps_per_epoch:
            log.warning("train.max_steps_per_epoch=%d caps every epoch", t.max_steps_per_epoch)
        if prepared is None:  # a resumed run applies the normalizer it was trained with
            prepared = prepare(cfg, normalizer=normalizer_from(load_checkpoint(last_pt)) if resume is not None else None,
                               panel=panel)
        if stop is not None and stop():
            raise RunInterrupted(run_dir, 0, 0, False, str(getattr(stop, "requested", "a stop request")),
                                 nproc=ctx.world_size)
        if ctx.is_main:
            last_pt.parent.mkdir(parents=True, exist_ok=True)  # the data is ready: the run directory may exist
            write_text(run_dir / "config.yaml", to_yaml(cfg))
        horizons = prepared.horizons
        check_early_stopping_metric(t.early_stopping_metric, record_keys(horizons))
        seed_everything(t.seed)
        model = ATFT_GAT_FAN.from_config(cfg, prepared.num_features).to(device)
        if ctx.active:  # the same initial weights, a dropout stream per rank
            torch.manual_seed(rank_seed(t.seed, ctx.rank))
        loss_fn = MultiHorizonLoss.from_config(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        average = WeightAverage(model, t.ema_decay) if t.ema_decay > 0 else None
        scored = average.module if average is not None else model  # the weights validated, kept and scored
        train_loader = prepared.loader("train", shuffle=True, num_replicas=ctx.world_size, rank=ctx.rank)
        val_loader = prepared.loader("val", shuffle=False)
        steps_per_epoch = min(len(train_loader), t.max_steps_per_epoch or len(train_loader))
        scheduler = warmup_cosine(optimizer, t.warmup_steps, steps_per_epoch * t.max_epochs, t.min_lr_ratio)
        scale = _target_scale(prepared)
        st = _State()
        if resume is not None:
            st = _restore(load_checkpoint(last_pt), model, optimizer, scheduler, ctx, average)
            log.info("resumed %s at epoch %d%s", run_dir, st.start_epoch,
                     f", batch {st.partial.batches}" if st.partial else "")

        train_model, train_loss = ctx.wrap(model), DistributedLoss(loss_fn, ctx) if ctx.active else loss_fn

        def save_last(epoch: int, mid: EpochProgress | None = None) -> None:  # a collective under torchrun
            extra = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     **rng_state(), "best_metric": st.best_metric, "best_epoch": st.best_epoch,
                     "bad_epochs": st.bad_epochs, "history": st.history, "mid_epoch": mid.to_dict() if mid else None,
                     "ema": average.state_dict() if average is not None else None}
            if ctx.active:  # every rank's RNG state and epoch position
                extra.update(world_size=ctx.world_size, ranks=ctx.gather(
                    {**rng_state(), "mid_epoch": mid.to_dict() if mid else None}))
            if ctx.is_main:
                save_checkpoint(last_pt, model, cfg, prepared.normalizer, extra=extra)

        metrics_path = run_dir / "metrics.jsonl"
        start_step = st.start_epoch * steps_per_epoch + (st.partial.steps if st.partial else 0)
        guards = _guards(cfg, prepared, model, start_step, run_dir if resume is not None else None, ctx.active)
        if agreed is not None:
            agreed.guards = guards
        stopped_early = False
        use_bar = t.progress and ctx.is_main and sys.stdout.isatty() and sys.stderr.isatty()
        for epoch in range(st.start_epoch, t.max_epochs):
            train_loader.set_epoch(epoch)
            bar, ticker = None, None
            if use_bar:
                from tqdm import tqdm
                bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False)
            elif t.progress and t.log_every_s > 0 and ctx.is_main:  # no terminal (CI logs, nohup): a plain line every log_every_s
                ticker = Ticker(logging.getLogger("atft.train"), t.log_every_s)
            try:
                stats = train_epoch(train_model, train_loader, train_loss, optimizer, scheduler, device=device,
                                    grad_clip=t.grad_clip, bf16=t.bf16, max_steps=t.max_steps_per_epoch,
                                    progress=bar, guards=guards, governor=governor, ticker=ticker,
                                    total_steps=steps_per_epoch, stop=stop,
                                    resume_from=st.partial if epoch == st.start_epoch else None,
                                    after_step=average.update if average is not None else None)
                if stats.interrupted:
                    save_last(epoch, stats.progress)
                    if ctx.is_main:
                        write_guards(run_dir, guards)
                    raise RunInterrupted(run_dir, epoch, stats.progress.batches, True,
                                         str(getattr(stop, "requested", "a stop request")), nproc=ctx.world_size)
                if guards is not None:
                    guards.on_epoch_end(epoch, stats.steps, stats.loss)
                if agreed is not None:
                    agreed.check_guards()
                    stats.samples = int(ctx.sum([stats.samples])[0])  # every rank's stocks
            except GuardStop:
                if ctx.is_main:
                    write_guards(run_dir, guards)
                if ctx.is_main and not last_pt.exists():  # keep the weights to inspect
                    save_checkpoint(last_pt, model, cfg, prepared.normalizer,
                                    extra={"epoch": epoch - 1, "stopped_by_guard": True})
                raise
            finally:
                if bar is not None:
                    bar.close()
            val, record = None, None
            if ctx.is_main:  # validation once, on rank 0; its record (and so every decision) broadcast
                val = evaluate(scored, val_loader, loss_fn, horizons, device=device, bf16=t.bf16,
                               min_stocks=cfg.data.min_stocks, target_scale=scale, cost_bps=t.cost_bps)
                lr = float(optimizer.param_groups[0]["lr"])
                record = epoch_record(epoch, stats, val, lr)
                for line in format_epoch_lines(epoch, stats, val, lr):
                    log.info(line)
            record = ctx.broadcast(record)
            assert record is not None
            st.history.append(record)
            check_early_stopping_metric(t.early_stopping_metric, list(record))
            watched = record[t.early_stopping_metric]
            if _better(watched, st.best_metric, t.early_stopping_mode):
                st.best_metric, st.best_epoch, st.bad_epochs = watched, epoch, 0
                if val is not None:
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", scored, cfg, prepared.normalizer,
                                    extra={"epoch": epoch, "metric": watched})
                    with atomic_path(run_dir / "predictions_val.parquet") as tmp:
                        val.predictions.write_parquet(tmp)
            else:
                st.bad_epochs += 1
            save_last(epoch)
            if ctx.is_main:
                write_history(metrics_path, st.history)
                write_guards(run_dir, guards)
            del val
            for cb in callbacks:
                cb(epoch, record)
            if stop is not None and stop() and epoch + 1 < t.max_epochs:
                raise RunInterrupted(run_dir, epoch + 1, 0, True, str(getattr(stop, "requested", "a stop request")),
                                     nproc=ctx.world_size)
            if t.patience and st.bad_epochs >= t.patience:
                log.info("early stopping at epoch %d: %s did not improve for %d epochs (train.patience=%d; "
                         "best %.6g at epoch %d, mode %s)", epoch, t.early_stopping_metric, st.bad_epochs,
                         t.patience, st.best_metric, st.best_epoch, t.early_stopping_mode)
                stopped_early = True
                break

        # final evaluation with the best weights (rank 0; its figures broadcast)
        best_path = run_dir / "checkpoints" / "best.pt"
        if ctx.is_main and best_path.exists():
            model.load_state_dict(load_checkpoint(best_path)["state_dict"])
        final: dict[str, Any] = {"run_id": run_id, "data": prepared.source, "best_epoch": st.best_epoch,
                                 "early_stopping_metric": t.early_stopping_metric, "best_metric": st.best_metric}
        for split in ("val", "test") if ctx.is_main else ():
            res = evaluate(model, prepared.loader(split, shuffle=False), loss_fn, horizons, device=device,
                           bf16=t.bf16, min_stocks=cfg.data.min_stocks, target_scale=scale, cost_bps=t.cost_bps)
            with atomic_path(run_dir / f"predictions_{split}.parquet") as tmp:
                res.predictions.write_parquet(tmp)
            block: dict[str, Any] = {"total_loss": res.loss}
            for key, m in res.metrics.items():
                lo, hi = ic_bootstrap_ci(res.daily_ic[key], seed=t.seed)
                block[key] = {**m, "ic_ci95": [lo, hi]}
            final[split] = block
            del res
        if ctx.is_main:
            write_json(run_dir / "metrics.json", final)
        final = ctx.broadcast(final)
        model = optimizer = scheduler = loss_fn = train_loader = val_loader = None  # type: ignore[assignment]
        average = scored = None  # type: ignore[assignment]
        train_model = train_loss = None  # type: ignore[assignment]
        release_cuda_memory()  # nothing of the run referenced any more (save_last's cells included)
        return FitResult(run_dir, st.history, st.best_epoch, st.best_metric, final, stopped_early)
    except BaseException as exc:
        if isinstance(exc, RunInterrupted):
            log.warning("run %s %s", run_id, exc)
        elif not isinstance(exc, GuardStop):
            log.error("run %s failed: %s: %s", run_id, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        if created and not last_pt.exists():  # nothing resumable: leave no half-written run directory
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if handler is not None:
            logging.getLogger("atft").removeHandler(handler)
            handler.close()
