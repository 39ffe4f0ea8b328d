"""Checkpoints: weights, the plain-dict config and the fitted normalizer, written atomically, read
with ``weights_only``.

A checkpoint is a ``dict``::

    {"state_dict", "config": atft.config.to_dict(cfg), "num_features", "format_version",
     "normalizer": Normalizer.state_dict(), **extra}

Everything in it is a tensor, int, float, bool, str, None, list or dict of those, so it loads
with ``torch.load(weights_only=True)`` (no pickled objects, no arbitrary code). The normalizer
(train-date winsor bounds, target scale) is what makes a checkpoint score new data exactly as
its run did: ``load_model`` returns it and ``atft.train.prepare.prepare(cfg, normalizer=...)``
applies it instead of refitting. The training loop stores optimizer / scheduler / RNG state in
``extra``.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

from atft.config import Config, from_dict, to_dict
from atft.data.normalize import Normalizer
from atft.errors import ConfigError, InputError, ShapeError
from atft.io import atomic_path
from atft.model.atft_gat_fan import ATFT_GAT_FAN

FORMAT_VERSION = 2  # 2: the fitted normalizer is stored
RESERVED = ("state_dict", "config", "num_features", "format_version", "normalizer")


def save_checkpoint(path: str | os.PathLike[str], model: ATFT_GAT_FAN, cfg: Config,
                    normalizer: Normalizer, *, extra: dict[str, Any] | None = None) -> None:
    """Atomically write ``model``'s weights, ``cfg`` as a plain dict, F, the fitted ``normalizer``
    and ``extra``.

    Raises:
        InputError: ``extra`` uses a reserved key.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise InputError(f"checkpoint extra uses reserved keys {clash}. Fix: rename them "
                         f"(reserved: {list(RESERVED)}).")
    payload: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": to_dict(cfg),
        "num_features": int(model.num_features),
        "format_version": FORMAT_VERSION,
        "normalizer": normalizer.state_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True``.

    Raises:
        InputError: the file is missing, or is not an atft checkpoint.
    """
    if not os.path.exists(path):
        raise InputError(f"checkpoint not found: {path}. Fix: pass the path of a .pt written by "
                         "atft train (runs/<run_id>/checkpoints/best.pt).")
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}. Fix: pass a checkpoint written "
                         "by atft (save_checkpoint).") from None
    if not isinstance(ck, dict) or any(k not in ck for k in RESERVED):
        got = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise InputError(f"{path} is not an atft checkpoint (needs keys {list(RESERVED)}, has "
                         f"{got}). Fix: pass a checkpoint written by atft (save_checkpoint).")
    if ck["format_version"] != FORMAT_VERSION:
        raise InputError(f"{path} has checkpoint format {ck['format_version']}, this atft reads "
                         f"{FORMAT_VERSION}. Fix: retrain or use the matching atft version.")
    return ck


def normalizer_from(ck: dict[str, Any]) -> Normalizer:
    """The fitted normalizer stored in a checkpoint dict (``load_checkpoint``)."""
    norm = Normalizer()
    norm.load_state_dict(ck["normalizer"])
    return norm


def require_features(path: str | os.PathLike[str], stored_f: int, f: int | None, what: str) -> None:
    """Raise ShapeError when ``what`` has another feature count ``f`` (> 0) than the checkpoint."""
    if f is not None and f > 0 and f != stored_f:
        raise ShapeError(f"checkpoint {path} was trained with F={stored_f} features but "
                         f"{what} has F={f}. Fix: use the same feature set as training "
                         f"(data.features / model.num_features={stored_f}) or retrain.")


class Restored(NamedTuple):
    """Everything a checkpoint restores: the model (eval mode), its config and its normalizer."""

    model: ATFT_GAT_FAN
    config: Config
    normalizer: Normalizer


def load_model(path: str | os.PathLike[str], cfg: Config | None = None,
               num_features: int | None = None) -> Restored:
    """Rebuild the model from the checkpoint's own config, load its weights and its normalizer.

    Args:
        path: checkpoint file.
        cfg: the caller's config; its F (when > 0), graph path and adaptive norm must match.
        num_features: the caller's data feature count; must match the stored F.

    Returns:
        ``Restored(model, stored_cfg, normalizer)``; the model is in eval mode.

    Raises:
        ShapeError: the caller's F differs from the stored F (both numbers named).
        ConfigError: the caller switches the graph path or adaptive norm differently from the
            run that wrote the checkpoint (a model trained with the GAT evaluated without it).
    """
    ck = load_checkpoint(path)
    stored = ck["config"]
    if "vsn_hidden" not in stored.get("model", {}):  # written before model.vsn_hidden: full width
        stored = {**stored, "model": {**stored.get("model", {}), "vsn_hidden": 0}}
    stored_cfg = from_dict(stored)
    stored_f = int(ck["num_features"])
    require_features(path, stored_f, num_features, "the data")
    require_features(path, stored_f, cfg.model.num_features if cfg is not None else None,
                     "model.num_features in the config")
    if cfg is not None:
        diffs = [f"{k}: checkpoint {a}, config {b}" for k, a, b in (
            ("graph path (model.use_gat and graph.enabled)", stored_cfg.graph_on, cfg.graph_on),
            ("model.adaptive_norm", stored_cfg.model.adaptive_norm, cfg.model.adaptive_norm),
        ) if a != b]
        if diffs:
            raise ConfigError(f"checkpoint {path} does not match the config: {'; '.join(diffs)}. "
                              "Fix: evaluate with the switches (and env flags BYPASS_GAT_COMPLETELY, "
                              "DISABLE_GRAPH_BUILDER, BYPASS_ADAPTIVE_NORM) the model was trained with.")
    model = ATFT_GAT_FAN.from_config(stored_cfg, stored_f)
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return Restored(model, stored_cfg, normalizer_from(ck))
