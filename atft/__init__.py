"""atft: ATFT-GAT-FAN for multi-horizon stock returns, and the health suite that keeps it learning.

The public API (imported lazily, so ``import atft`` stays light)::

    cfg = atft.load_config("default", ["train.max_epochs=3"])   # structured config
    prepared = atft.prepare(cfg)                                # panel, split, normalizer, graphs
    result = atft.fit(cfg, prepared)                            # a training run -> runs/<id>/
    results = atft.run_data_checks("data.parquet", cfg)         # the dataset health checks
    model = atft.ATFT_GAT_FAN.from_config(cfg, prepared.num_features)
    model, cfg, normalizer = atft.load_model("runs/<id>/checkpoints/best.pt")

Where each concept lives: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Config": "atft.config:Config",
    "load_config": "atft.config:load",
    "prepare": "atft.train.prepare:prepare",
    "fit": "atft.train.fit:fit",
    "run_data_checks": "atft.health.dataset_checks:run_checks",
    "ATFT_GAT_FAN": "atft.model.atft_gat_fan:ATFT_GAT_FAN",
    "load_model": "atft.train.checkpoint:load_model",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'atft' has no attribute {name!r}")
    module, attr = _API[name].split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
