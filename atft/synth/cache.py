"""Files of a synthetic panel and the cache of the embedded default (``data.path: ""``).

``write_panel`` writes ``<stem>.parquet`` (the training panel), ``<stem>.meta.json`` (the
sidecar: parameters, shapes, feature roles, oracle IC per horizon) and ``<stem>.truth.parquet``
(the planted conditional means), each atomically, the training parquet last. The truth file is
never part of a dataset scan (``atft.data.source.TRUTH_SUFFIX``). ``ensure_default_panel``
generates the embedded default once into ``data.cache_dir`` under a file lock (xdist workers
share it). Training never reads the sidecar; the CLI and the reports do (``read_sidecar``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from filelock import FileLock

from atft.config import Config
from atft.data.source import TRUTH_SUFFIX
from atft.errors import InputError
from atft.io import atomic_paths, check_writable, json_text
from atft.synth.generator import GENERATOR_VERSION, SynthParams, SynthResult, generate

SIDECAR_SUFFIX = ".meta.json"


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``<stem>.meta.json`` next to the panel parquet."""
    p = Path(path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def truth_path(path: str | os.PathLike[str]) -> Path:
    """``<stem>.truth.parquet`` next to the panel parquet (excluded from dataset scans)."""
    p = Path(path)
    return p.with_name(p.stem + TRUTH_SUFFIX)


def check_panel_path(out: str | os.PathLike[str]) -> Path:
    """Before generating: ``out`` ends with ``.parquet`` (not ``.truth.parquet``) and it and its two
    companions can be written (``atft.io.check_writable``).

    Raises:
        InputError: a wrong suffix, a directory, or an unwritable location, named with the fix.
    """
    path = Path(out)
    if path.suffix != ".parquet" or path.name.endswith(TRUTH_SUFFIX):
        raise InputError(f"output path {path} must end with '.parquet' (and not '{TRUTH_SUFFIX}'). "
                         "Fix: pass e.g. --out data/synth.parquet.")
    for p in (path, sidecar_path(path), truth_path(path)):
        check_writable(p, "the synthetic panel file")
    return path


def write_panel(out: str | os.PathLike[str], result: SynthResult) -> Path:
    """Write ``<stem>.parquet``, ``<stem>.meta.json`` and ``<stem>.truth.parquet`` together: all
    three go to temp files first and are renamed only when all are written, the training parquet
    last (its presence implies the other two); an error or an interrupt leaves none of them.

    Raises:
        InputError: a bad ``out`` (``check_panel_path``) or a failed write.
    """
    path = check_panel_path(out)
    meta = dict(result.meta, files={"panel": path.name, "truth": truth_path(path).name})
    with atomic_paths([truth_path(path), sidecar_path(path), path]) as (t_truth, t_meta, t_panel):
        result.truth.write_parquet(t_truth)
        t_meta.write_text(json_text(meta))
        result.panel.write_parquet(t_panel)
    return path


def default_panel_name(params: SynthParams, horizons: tuple[int, ...] | list[int],
                       template: str) -> str:
    """``synth_<hash>.parquet``: a short hash of the parameters, horizons, template and version."""
    key = json.dumps({"params": asdict(params), "horizons": [int(h) for h in horizons],
                      "template": template, "version": GENERATOR_VERSION}, sort_keys=True)
    return f"synth_{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


def ensure_default_panel(cfg: Config) -> Path:
    """The embedded default panel for ``cfg.data.synthetic``, generated into ``cfg.data.cache_dir``
    once (under a file lock shared by xdist workers) and reused afterwards."""
    params = SynthParams.from_config(cfg.data.synthetic)
    horizons = tuple(int(h) for h in cfg.data.horizons)
    path = default_panel_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path.exists() and sidecar_path(path).exists() and truth_path(path).exists()):
            write_panel(path, generate(params, horizons, cfg.data.target_template))
    return path


def default_panel_path(cfg: Config) -> Path:
    """Where the embedded default for ``cfg.data.synthetic`` lives in ``data.cache_dir``."""
    params = SynthParams.from_config(cfg.data.synthetic)
    return Path(cfg.data.cache_dir) / default_panel_name(params, [int(h) for h in cfg.data.horizons],
                                                         cfg.data.target_template)


def read_sidecar(cfg: Config, *, generate_default: bool = True) -> dict[str, Any] | None:
    """The synthetic sidecar of the run's data (``data.path``; "" = the embedded default), or None
    for data without one.

    Args:
        cfg: the run's config.
        generate_default: write the embedded panel when it is not there yet; False only looks.
    """
    if cfg.data.path:
        path = Path(cfg.data.path)
    elif generate_default:
        path = ensure_default_panel(cfg)
    else:
        path = default_panel_path(cfg)
    side = sidecar_path(path) if path.is_file() else None
    if side is None or not side.exists():
        return None
    meta: dict[str, Any] = json.loads(side.read_text())
    return meta


def resolve_data_path(cfg: Config, path: str | None = None) -> str:
    """The dataset path: ``path``, else ``cfg.data.path``, else the embedded synthetic panel
    (generated into ``data.cache_dir`` on first use)."""
    p = path if path is not None else str(cfg.data.path)
    return p if p else str(ensure_default_panel(cfg))
