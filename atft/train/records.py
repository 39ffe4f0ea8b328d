"""The files of a run directory besides checkpoints: the epoch records (``metrics.jsonl``), the
log file, the RNG state a resume restores, the guards' series (``health.json``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atft.config import Config
from atft.errors import ConfigError
from atft.eval.metrics import compute_metrics
from atft.horizons import Horizons, metric_name
from atft.io import write_json, write_text
from atft.train.guards import Guards
from atft.train.step import EpochStats, EvalResult

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


def write_history(path: Path, history: Sequence[dict[str, float]]) -> None:
    """``metrics.jsonl``: one JSON line per epoch so far, rewritten atomically (resume-safe)."""
    lines = [json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
             for rec in history]
    write_text(path, "".join(line + "\n" for line in lines))


def rng_state() -> dict[str, Any]:
    """CPU (and CUDA, when initialized) RNG state for the resume checkpoint."""
    state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(ck: dict[str, Any]) -> None:
    torch.set_rng_state(ck["torch_rng"])
    cuda = ck.get("cuda_rng")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def attach_log(cfg: Config, run_id: str) -> tuple[logging.Handler, Path]:
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


def write_guards(run_dir: Path, guards: Guards | None) -> None:
    """``runs/<id>/health.json``: every guard's rule and series so far."""
    if guards is not None:
        write_json(run_dir / "health.json", guards.series())




def epoch_record(epoch: int, stats: EpochStats, val: EvalResult, lr: float) -> dict[str, float]:
    """One line of ``metrics.jsonl``: the epoch's training figures and every validation metric."""
    record: dict[str, float] = {"epoch": epoch, "train/total_loss": stats.loss, "lr": lr,
                                "train/samples_per_s": stats.samples_per_s, "train/seconds": stats.seconds,
                                "train/batch_seconds": stats.batch_seconds,
                                "train/skipped_batches": stats.skipped_batches}
    record.update({metric_name("train", "loss", k): v for k, v in stats.per_horizon.items()})
    record.update(val.flat("val"))
    return record
