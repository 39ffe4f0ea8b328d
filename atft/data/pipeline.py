"""The data half of THE preparation every run shares (``atft.train.prepare.prepare`` is the whole).

``prepare_data(cfg, path, graph=...)`` loads the panel, splits the dates (embargo >= the longest
horizon), fits the normalizer on the train dates only and applies it to every date, and keeps the
graph source it is given (``atft.graph.builder.GraphBuilder``, built one layer up; None = no
edges). ``Prepared.loader(split)`` gives day-batch loaders that share exactly the same
preprocessing and graph path for train, val and test (failure mode 6); only the shuffling differs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from atft.config import Config
from atft.data.batch import DayBatch
from atft.data.loader import DayBatchLoader, GraphSource
from atft.data.normalize import NormalizedPanel, Normalizer
from atft.data.panel import Panel, load_panel
from atft.data.splits import SPLIT_NAMES, Split, split_panel
from atft.errors import InputError
from atft.horizons import Horizons

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a run needs from the data, prepared once.

    Attributes:
        cfg: the ``atft.config.Config`` it was prepared with.
        panel: raw dense panel; horizons: the horizon contract; split: date indices per split.
        normalizer: fit on ``split.train``; normalized: its output for every date.
        graph_builder: the graph source; None when the graph path is off (``Config.graph_on``):
            no edges in any split.
        timings: seconds spent in load / normalize.
        source: the dataset path the panel was read from (named in run reports).
    """

    cfg: Config
    panel: Panel
    horizons: Horizons
    split: Split
    normalizer: Normalizer
    normalized: NormalizedPanel
    graph_builder: GraphSource | None
    timings: dict[str, float] = field(default_factory=dict)
    source: str = ""

    @property
    def num_features(self) -> int:
        """F, the number of model input features."""
        return self.panel.num_features

    def loader(self, split_name: str, shuffle: bool | None = None, seed: int | None = None,
               batch_size: int | None = None, num_replicas: int = 1, rank: int = 0) -> DayBatchLoader:
        """Day-batch loader of one split, same preprocessing and graph path for every split.

        Args:
            split_name: "train" | "val" | "test".
            shuffle: None = shuffle train only.
            seed: day-order seed; None = ``cfg.train.seed`` (use ``set_epoch`` per epoch).
            batch_size: stocks per batch; None = ``cfg.train.batch_size``.
            num_replicas, rank: serve replica ``rank``'s share of the days (data parallelism,
                ``DayBatchLoader``); 1, 0 = every day.

        ``data.prefetch`` batches are built ahead in a background thread (none under
        ``train.single_process``: one thread of work).
        """
        c = self.cfg
        return DayBatchLoader(
            self.panel, self.normalized, self.split.get(split_name),
            seq_len=int(c.data.sequence_length),
            batch_size=int(batch_size if batch_size is not None else c.train.batch_size),
            graph_builder=self.graph_builder,
            shuffle=(split_name == "train") if shuffle is None else bool(shuffle),
            seed=int(c.train.seed if seed is None else seed),
            min_stocks=int(c.data.min_stocks),
            num_replicas=num_replicas,
            rank=rank,
            prefetch=0 if c.train.single_process else int(c.data.prefetch),
        )

    def day_batch(self, split_name: str = "train", i: int = 0, *, max_stocks: int = 0, seed: int = 0) -> DayBatch:
        """One real single-day batch (the ``i``-th served date of the split, chronological).

        ``max_stocks`` > 0 keeps that many of the day's stocks, drawn with ``seed`` (the graph on
        them only; ``DayBatchLoader.day``): the health suite's model checks (``health.smoke_stocks``).
        """
        loader = self.loader(split_name, shuffle=False)
        if not len(loader.dates):
            raise InputError(f"split '{split_name}' has no date with >= {loader.min_stocks} stocks "
                             f"({loader.skipped_dates} skipped). Fix: lower data.min_stocks or use more data.")
        return loader.day(i, max_stocks=max_stocks, seed=seed)


def prepare_data(cfg: Config, path: str, *, graph: GraphSource | None = None,
                 normalizer: Normalizer | None = None, panel: Panel | None = None) -> Prepared:
    """Load, split and normalize the dataset at ``path`` for ``cfg``; batches get ``graph``'s edges.

    Args:
        cfg: the ``atft.config.Config``.
        path: dataset path (file, directory or glob).
        graph: the per-date graph source, or None (no edges; the caller decides from
            ``cfg.graph_on``).
        normalizer: a fitted normalizer to apply as it is (restored from a checkpoint: the
            winsor bounds and target scale of the training run); None = fit on the train dates.
        panel: the panel of ``path`` already loaded (``atft train`` checks it before importing
            torch); None = load it here.

    Raises:
        DataError: from loading (columns, duplicates, ...) or splitting (too few dates).
    """
    t0 = time.perf_counter()
    panel = panel if panel is not None else load_panel(cfg, path)
    t1 = time.perf_counter()
    horizons = Horizons.from_config(cfg)
    split = split_panel(cfg, panel.valid)
    if normalizer is None:
        normalizer = Normalizer.from_config(cfg).fit(panel, split.train)
    normalized = normalizer.transform(panel)
    t2 = time.perf_counter()
    if graph is None:
        log.info("graph path OFF (graph.enabled=%s, model.use_gat=%s): batches carry no edges in every split",
                 cfg.graph.enabled, cfg.model.use_gat)
    log.info("data: %d dates x %d stocks x %d features; split %s (embargo %d); load %.2fs, normalize %.2fs",
             panel.num_dates, panel.num_stocks, panel.num_features, split.sizes(), split.embargo, t1 - t0, t2 - t1)
    return Prepared(cfg=cfg, panel=panel, horizons=horizons, split=split, normalizer=normalizer,
                    normalized=normalized, graph_builder=graph,
                    timings={"load_s": t1 - t0, "normalize_s": t2 - t1}, source=str(path))


__all__ = ["Prepared", "prepare_data", "SPLIT_NAMES"]
