"""The model and training step under test: ours, or the user's own (``--atft-model``, ``--atft-train-step``).

A user's model is given as ``MODULE:CALLABLE``, a factory ``(config, num_features) -> nn.Module``,
with one of two input conventions:

* ``batch``: ``model(batch)`` with a ``DayBatch`` (atft's own convention);
* ``dict``: ``model({"features": [N, T, F], "edge_index": [2, E], "edge_attr": [E, 3]})``, the
  recovery plan's ``model({"features": dummy_input})``.

Its output must be ``{"predictions": {key: [N] or [N, Q]}}``. ``ForeignModel`` wraps it into
atft's output contract (``predictions`` ``[N, Q]``, ``point`` ``[N]`` = the median column) so that
the loss, THE training step and every check run on it unchanged; the keys are NOT renamed: a
model that says ``horizon_1`` where the contract says ``horizon_1d`` fails the key check, naming
the difference. A user's training step ``(model, batch, optimizer) -> loss`` replaces ours in the
checks that train (loss > 0, gradient path, leaks, mini-train); it gets the user's own module
and a ``DayBatch`` (``batch.as_dict()`` is the dict input, ``batch.targets`` ``[N, H]`` the targets,
NaN where missing).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from atft.config import Config
from atft.data.batch import DayBatch
from atft.errors import ConfigError, HorizonMismatchError, ShapeError
from atft.horizons import Horizons

INPUTS = ("batch", "dict")
TrainStep = Callable[[nn.Module, DayBatch, torch.optim.Optimizer], Any]


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """``MODULE:CALLABLE`` -> the callable; the current directory is importable (a user's repo).

    Raises:
        ConfigError: a malformed spec, a module that does not import, or a missing attribute,
            each named with the fix.
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{what} '{spec}' is not MODULE:CALLABLE. Fix: e.g. --atft-model mymodels:build "
                          "(a module importable from the current directory and a function in it).")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # the user's module: any import failure is an input error
        raise ConfigError(f"{what} '{spec}': cannot import module '{module}' ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}). Fix: run from the directory that "
                          "holds it or put it on PYTHONPATH.") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ConfigError(f"{what} '{spec}': module '{module}' has no callable '{attr}'. Fix: name the "
                          f"factory function defined in {getattr(mod, '__file__', module)}.")
    return fn  # type: ignore[no-any-return]


class ForeignModel(nn.Module):
    """A user's model in atft's output contract (module docstring).

    Args:
        inner: the user's module.
        input_kind: "batch" or "dict".
        quantiles: the configured quantile levels; an ``[N, Q]`` output must have this Q (its
            median column is the point forecast); an ``[N]`` output is a point forecast (Q = 1).
        horizons: the configured horizons: output keys other than ``horizon_{h}d`` for exactly
            these h raise ``HorizonMismatchError`` naming the symmetric difference.

    Shapes:
        batch.features ``[N, T, F]`` -> predictions ``{key: [N, Q]}``, point ``{key: [N]}``.
    """

    def __init__(self, inner: nn.Module, input_kind: str, quantiles: Sequence[float], horizons: Horizons) -> None:
        super().__init__()
        self.horizons = horizons
        if input_kind not in INPUTS:
            raise ConfigError(f"--atft-model-input '{input_kind}' is not one of {list(INPUTS)}.")
        self.inner = inner
        self.input_kind = input_kind
        self.configured = [float(q) for q in quantiles]
        self.quantiles: list[float] | None = None  # the levels of the outputs, known after a forward
        self.num_features = int(getattr(inner, "num_features", 0))

    def forward(self, batch: DayBatch) -> dict[str, Any]:
        out = self.inner(batch if self.input_kind == "batch" else batch.as_dict())
        if not isinstance(out, Mapping) or not isinstance(out.get("predictions"), Mapping):
            got = sorted(map(str, out)) if isinstance(out, Mapping) else type(out).__name__
            raise HorizonMismatchError(
                f"the model must return {{'predictions': {{'horizon_{{h}}d': [N] or [N, Q]}}}}; got {got}. "
                "Fix: wrap the output as the adapter contract says (README, 'Your own model').")
        self.horizons.check_keys(map(str, out["predictions"]), "the model's output['predictions']")
        n = batch.num_stocks
        preds: dict[str, Tensor] = {}
        for key, t in out["predictions"].items():
            if not isinstance(t, Tensor) or t.dim() not in (1, 2) or t.shape[0] != n:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ShapeError(f"predictions['{key}'] must be [N] or [N, Q] with N={n} stocks, got {shape}.")
            preds[str(key)] = t.unsqueeze(-1) if t.dim() == 1 else t
        qs = {p.shape[1] for p in preds.values()}
        if len(qs) > 1 or (qs and next(iter(qs)) not in (1, len(self.configured))):
            raise ShapeError(f"predictions have {sorted(qs)} columns; expected 1 (a point forecast) or "
                             f"{len(self.configured)} (the quantiles {self.configured} of model.quantiles).")
        q = next(iter(qs), 1)
        self.quantiles = [0.5] if q == 1 else self.configured
        median = self.quantiles.index(0.5)
        return {"predictions": preds, "point": {k: p[:, median] for k, p in preds.items()}}

    def children_to_check(self) -> dict[str, nn.Module | None]:
        """The user's top-level child modules that hold parameters (for per-part gradients)."""
        return {name: m for name, m in self.inner.named_children() if any(True for _ in m.parameters())}


@dataclass(frozen=True)
class ModelSpec:
    """Which model the suite checks: atft's own (``factory`` None) or a user's factory."""

    factory: str | None = None  # MODULE:CALLABLE of a (config, num_features) -> nn.Module factory
    input_kind: str = "batch"  # "batch" | "dict" (user models only)
    train_step: str | None = None  # MODULE:CALLABLE of a (model, batch, optimizer) -> loss step
    checkpoint: str | None = None  # an atft checkpoint (atft's model only)

    @property
    def foreign(self) -> bool:
        return self.factory is not None

    def describe(self) -> str:
        model = f"{self.factory} (input {self.input_kind})" if self.factory else "atft ATFT_GAT_FAN"
        step = self.train_step or "atft.train.step.train_step"
        return f"{model}; train step {step}" + (f"; checkpoint {self.checkpoint}" if self.checkpoint else "")

    def build(self, cfg: Config, num_features: int) -> nn.Module:
        """A fresh model seeded with ``train.seed`` (or the checkpoint's weights)."""
        torch.manual_seed(cfg.train.seed)
        if self.factory is None:
            if self.checkpoint:
                from atft.train.checkpoint import load_model

                return load_model(self.checkpoint, cfg, num_features).model
            from atft.model.atft_gat_fan import ATFT_GAT_FAN

            return ATFT_GAT_FAN.from_config(cfg, num_features)
        inner = load_callable(self.factory, "--atft-model")(cfg, num_features)
        if not isinstance(inner, nn.Module):
            raise ConfigError(f"--atft-model {self.factory} returned a {type(inner).__name__}, not a "
                              "torch.nn.Module. Fix: the factory must return the model.")
        model = ForeignModel(inner, self.input_kind, cfg.model.quantiles, Horizons.from_config(cfg))
        model.num_features = num_features
        return model

    def step_fn(self, loss_fn: Any, cfg: Config) -> TrainStep:
        """THE training step the checks run: atft's ``train_step`` (the one ``train_epoch`` calls) or
        the user's ``(model, batch, optimizer) -> loss``."""
        if self.train_step is not None:
            user = load_callable(self.train_step, "--atft-train-step")

            def theirs(model: nn.Module, batch: DayBatch, optimizer: torch.optim.Optimizer) -> Any:
                # the user's step trains the user's own module (inside the adapter) on a DayBatch:
                # batch.as_dict() is the dict input, batch.targets [N, H] the targets (NaN = missing)
                return user(model.inner if isinstance(model, ForeignModel) else model, batch, optimizer)

            return theirs
        from atft.health.model_checks import atft_step

        return atft_step(loss_fn, grad_clip=float(cfg.train.grad_clip), bf16=bool(cfg.train.bf16))
