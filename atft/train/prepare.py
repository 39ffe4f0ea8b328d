"""THE preparation every run shares: training, evaluation, ``atft diagnose-head``, the health suite.

``prepare(cfg, path)`` resolves the dataset (``data.path``; "" = the embedded synthetic panel,
generated once by ``atft.synth.cache.ensure_default_panel``), builds the per-date graph builder
when the graph path is on (``Config.graph_on``) and hands both to the data pipeline
(``atft.data.pipeline.prepare_data``: panel, split, normalizer, loaders). Train, val and test get
the same preprocessing and the same graph path (failure mode 6).
"""

from __future__ import annotations

from pathlib import Path

from atft.config import Config
from atft.data.normalize import Normalizer
from atft.data.panel import Panel
from atft.data.pipeline import Prepared, prepare_data
from atft.graph.builder import GraphBuilder
from atft.synth.cache import resolve_data_path


def prepare(cfg: Config, path: str | Path | None = None, *, normalizer: Normalizer | None = None,
            panel: Panel | None = None) -> Prepared:
    """Load, split, normalize and set up graphs for ``cfg``.

    Args:
        cfg: the ``atft.config.Config``.
        path: dataset path; None = ``cfg.data.path`` ("" = the embedded synthetic panel).
        normalizer: a fitted normalizer (from a checkpoint) to apply instead of fitting one.
        panel: the dataset's panel, already loaded and checked (``atft train`` does so before
            importing torch); None = load it.

    Raises:
        DataError: from loading (columns, duplicates, ...) or splitting (too few dates).
    """
    src = resolve_data_path(cfg, None if path is None else str(path))
    graph = GraphBuilder.from_config(cfg.graph) if cfg.graph_on else None
    return prepare_data(cfg, src, graph=graph, normalizer=normalizer, panel=panel)
