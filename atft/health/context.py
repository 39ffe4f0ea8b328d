"""What the health checks run on: the resources of one suite session (``HealthContext``).

A check names the resources it needs by parameter name (``def head_std(model, day_batch, cfg)``),
as a pytest test names fixtures; the context provides them. Data resources are computed once per
session and shared (``dataset_results`` is one pass over the dataset, ``prepared`` one run of the
training pipeline); ``model`` and ``loss_fn`` are fresh at every request (checks train and mutate
them). Each resource is also a pytest fixture ``atft_<name>`` (``atft.health.plugin``).

A planted fault is a function ``HealthContext -> HealthContext`` that replaces resources
(``ctx.replace(model_spec=...)``, ``ctx.replace(dataset=frame)``): the same check then runs on the
faulty resources. The replaced context recomputes everything it does not override.

Resources (name: what, sharing):

* ``cfg``: the effective config (env flags applied), ``raw_cfg``: as written (no env flags);
* ``dataset``: path of the data under test (the embedded default generated once), or a frame
  planted by a fault; ``dataset_columns``; ``dataset_results``: every dataset check's results
  from one pass (shared); ``label_stats``: are the targets the forward returns (shared);
* ``prepared``: panel, split, normalizer (a checkpoint's own when given), loaders (shared);
  ``horizons``, ``target_scale``, ``day_batch`` (one validation day), ``train_batches``
  (three training days) (shared); the model checks need no whole day: ``day_batch`` and
  ``train_batches`` hold ``health.smoke_stocks`` stocks of each day (seeded draw, the graph built on
  the drawn stocks only; 0 = every stock), the dataset checks read the whole file;
* ``model_spec``: the model and step under test; ``model``: a fresh model (fresh);
  ``loss_fn`` (fresh); ``train_step``: THE step, atft's or the user's;
* ``environ``, ``dotenv`` (the parsed ``./.env``), ``allow_gat_bypass``;
* ``gate_dataset`` / ``gate_prepared``: what the slow gates train on: the data under test, except
  on the embedded default, where it is the panel of ``health.gate_seed`` (a seed no default was
  tuned on; the smoke checks keep ``data.synthetic.seed``) (shared);
* ``fit_3ep`` / ``fit_10ep``: a 3- / 10-epoch training run of atft's model on ``gate_prepared``
  (shared; the slow gates); ``run_dir``: a scratch directory; ``artifacts``: plot data for the report.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from atft.config import Config
from atft.health.adapter import ModelSpec

SHARED = ("cfg", "raw_cfg", "dataset", "dataset_columns", "dataset_results", "label_stats", "prepared", "horizons",
          "target_scale", "day_batch", "train_batches", "environ", "dotenv", "gate_dataset", "gate_prepared",
          "fit_3ep", "fit_10ep")


class Artifacts:
    """Plot data a check hands to the report (``atft report``): ``add(kind, data)``."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, kind: str, data: dict[str, Any]) -> None:
        self.items.append({"kind": kind, **data})


@dataclasses.dataclass
class HealthContext:
    """The resources of one session (module docstring).

    Args:
        cfg: effective config (env flags applied; ``data.path`` set when data was given).
        raw_cfg: the same config without env flags.
        model_spec: the model / train step / checkpoint under test.
        allow_gat_bypass: deliberate ablation runs only.
        workdir: where ``.env`` is read and scratch runs go.
        environ: the environment to check (default ``os.environ``).
        overrides: resources replaced by a planted fault (or a test).
    """

    cfg: Config
    raw_cfg: Config
    model_spec: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    allow_gat_bypass: bool = False
    workdir: Path = dataclasses.field(default_factory=Path.cwd)
    environ: Mapping[str, str] | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    timings: dict[str, float] = dataclasses.field(default_factory=dict, repr=False)  # shared resource -> build s
    _building: list[float] = dataclasses.field(default_factory=list, repr=False)  # child seconds per open build

    # ------------------------------------------------------------------ access
    def resolve(self, name: str) -> Any:
        """The resource ``name`` (an override, a shared cached value, or a fresh one)."""
        if name in self.overrides:
            return self.overrides[name]
        if name in ("cfg", "raw_cfg", "model_spec", "allow_gat_bypass"):
            return getattr(self, name)
        provider: Callable[[], Any] | None = getattr(self, f"_r_{name}", None)
        if provider is None:
            raise KeyError(f"unknown health resource '{name}'; known: {sorted(self.names())}")
        if name not in SHARED:
            return provider()
        if name not in self._cache:
            self._cache[name] = self._timed(name, provider)
        return self._cache[name]

    def _timed(self, name: str, provider: Callable[[], Any]) -> Any:
        """Build a shared resource, recording its own seconds (those of resources it needs excluded)."""
        t0 = time.perf_counter()
        self._building.append(0.0)
        try:
            return provider()
        finally:
            children = self._building.pop()
            spent = time.perf_counter() - t0
            self.timings[name] = spent - children
            if self._building:
                self._building[-1] += spent

    @classmethod
    def names(cls) -> list[str]:
        return sorted(["cfg", "raw_cfg", "model_spec", "allow_gat_bypass"]
                      + [n.removeprefix("_r_") for n in dir(cls) if n.startswith("_r_")])

    def replace(self, **resources: Any) -> HealthContext:
        """A context with ``resources`` replaced (``model_spec``/``cfg`` are fields) and a fresh cache."""
        fields = {k: resources.pop(k) for k in ("cfg", "raw_cfg", "model_spec", "allow_gat_bypass")
                  if k in resources}
        return dataclasses.replace(self, **fields, overrides={**self.overrides, **resources}, _cache={},
                                   timings={}, _building=[])

    def with_artifacts(self, artifacts: Artifacts) -> HealthContext:
        """This context with its own ``artifacts`` and the SAME shared resources (no shared resource
        depends on ``artifacts``: a check that hands plot data over does not prepare the data again)."""
        return dataclasses.replace(self, overrides={**self.overrides, "artifacts": artifacts})

    # ------------------------------------------------------------------ data
    def _r_dataset(self) -> str | Path | pl.DataFrame:
        from atft.synth.cache import resolve_data_path

        return resolve_data_path(self.cfg)

    def _r_dataset_columns(self) -> list[str]:
        data = self.resolve("dataset")
        if isinstance(data, pl.DataFrame):
            return list(data.columns)
        from atft.data.source import scan

        return list(scan(data, self.cfg.data.code_col, self.cfg.data.date_col).collect_schema().names())

    def _r_dataset_results(self) -> dict[str, Any]:
        from atft.health.dataset_checks import run_checks_by_name

        data = self.resolve("dataset")
        return run_checks_by_name(data if isinstance(data, pl.DataFrame) else str(data), self.cfg)

    def _r_label_stats(self) -> Any:
        from atft.data.labels import label_stats
        from atft.data.source import scan

        data = self.resolve("dataset")
        lf = data.lazy() if isinstance(data, pl.DataFrame) else scan(data, self.cfg.data.code_col, self.cfg.data.date_col)
        return label_stats(lf, self.cfg)

    def _r_prepared(self) -> Any:
        from atft.train.prepare import prepare

        data = self.resolve("dataset")
        if isinstance(data, pl.DataFrame):  # a planted frame: the pipeline reads files
            path = self.workdir / ".atft_planted.parquet"
            data.write_parquet(path)
            data = path
        normalizer = None
        if self.model_spec.checkpoint:
            from atft.train.checkpoint import load_model

            normalizer = load_model(self.model_spec.checkpoint).normalizer
        return prepare(self.cfg, str(data), normalizer=normalizer)

    def _r_horizons(self) -> Any:
        from atft.horizons import Horizons

        return Horizons.from_config(self.cfg)

    def _r_target_scale(self) -> list[float]:
        return [float(s) for s in self.resolve("prepared").normalizer.target_scale]

    def _r_day_batch(self) -> Any:
        h = self.cfg.health
        return self.resolve("prepared").day_batch("val", max_stocks=int(h.smoke_stocks), seed=int(self.cfg.train.seed))

    def _r_train_batches(self) -> list[Any]:
        prepared, h = self.resolve("prepared"), self.cfg.health
        return [prepared.day_batch("train", i, max_stocks=int(h.smoke_stocks), seed=int(self.cfg.train.seed))
                for i in range(3)]

    # ------------------------------------------------------------------ model and step
    def _r_model(self) -> Any:
        return self.model_spec.build(self.cfg, self.resolve("prepared").num_features)

    def _r_loss_fn(self) -> Any:
        return QuantileAwareLoss(self.cfg)

    def _r_train_step(self) -> Any:
        return self.model_spec.step_fn(self.resolve("loss_fn"), self.cfg)

    # ------------------------------------------------------------------ environment
    def _r_environ(self) -> Mapping[str, str]:
        return dict(os.environ if self.environ is None else self.environ)

    def _r_dotenv(self) -> tuple[str, dict[str, str]]:
        from atft.health.config_checks import read_dotenv

        path = self.workdir / ".env"
        return str(path), read_dotenv(path)

    def _gate_cfg(self) -> Config | None:
        """The config of the gates' own panel, or None when they train on the data under test."""
        seed = int(self.cfg.health.gate_seed)
        if self.cfg.data.path or "dataset" in self.overrides or seed < 0 or seed == self.cfg.data.synthetic.seed:
            return None
        data = self.cfg.data
        return dataclasses.replace(self.cfg, data=dataclasses.replace(
            data, synthetic=dataclasses.replace(data.synthetic, seed=seed)))

    def _r_gate_dataset(self) -> str | Path | pl.DataFrame:
        from atft.synth.cache import ensure_default_panel

        cfg = self._gate_cfg()
        return self.resolve("dataset") if cfg is None else ensure_default_panel(cfg)

    def _r_gate_prepared(self) -> Any:
        from atft.train.prepare import prepare

        cfg = self._gate_cfg()
        return self.resolve("prepared") if cfg is None else prepare(cfg, str(self.resolve("gate_dataset")))

    def _fit(self, epochs: int) -> Any:
        from atft.train.fit import fit

        cfg, root = self.cfg, self.resolve("run_dir")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, max_epochs=epochs, run_dir=str(root / "runs"), log_dir=str(root / "logs"), progress=False))
        return fit(cfg, self.resolve("gate_prepared"), run_id=f"health_{epochs}ep")

    def _r_fit_3ep(self) -> Any:
        return self._fit(3)

    def _r_fit_10ep(self) -> Any:
        return self._fit(10)

    def _r_run_dir(self) -> Path:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="atft_health_"))

    def _r_artifacts(self) -> Artifacts:
        return Artifacts()


class QuantileAwareLoss:
    """atft's loss for the model under test: the configured quantiles for an ``[N, Q]`` model,
    the median alone for a model that forecasts a point (``[N, 1]``, a user's model)."""

    def __init__(self, cfg: Config) -> None:
        from atft.train.loss import MultiHorizonLoss

        point = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantiles=[0.5]))
        # both built now: nothing is allocated lazily inside a checked run (the leak check counts tensors)
        self.quantile_loss = MultiHorizonLoss.from_config(cfg)
        self.point_loss = MultiHorizonLoss.from_config(point)

    def __call__(self, output: Mapping[str, Any], batch: Any) -> Any:
        preds = output.get("predictions") if isinstance(output, Mapping) else None
        q = next(iter(preds.values())).shape[-1] if isinstance(preds, Mapping) and preds else 0
        return (self.point_loss if q == 1 else self.quantile_loss)(output, batch)
