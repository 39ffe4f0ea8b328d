"""Property checks (smoke, hypothesis): input-shape edge cases and stock-permutation equivariance.

The examples come from ``atft.health.strategies`` (N = 1, 2, ...; no edges; isolated stocks; T
from 1 to the configured length; NaN features; all targets missing; packed days), derandomized
under the ``ci`` profile. They run on the model under test, atft's or the user's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from atft.config import Config
from atft.data.batch import DayBatch
from atft.errors import AtftError
from atft.health.adapter import ForeignModel
from atft.health.checks.model import with_model_fault
from atft.health.registry import health_check
from atft.health.result import CheckResult
from atft.horizons import Horizons


def _max_t(cfg: Config) -> int:
    return min(int(cfg.data.sequence_length), 20)


def _nan_for_one_stock(inner: nn.Module, batch: DayBatch) -> Any:  # a per-batch std that is 0/0 at N=1
    out = inner(batch)
    if batch.num_stocks == 1:
        return {**out, "predictions": {k: q * float("nan") for k, q in out["predictions"].items()},
                "point": {k: p * float("nan") for k, p in out["point"].items()}}
    return out


@health_check(area="properties", fault=with_model_fault(_nan_for_one_stock))
def edge_case_batches(model: nn.Module, cfg: Config, prepared: Any, horizons: Horizons,
                      loss_fn: Any) -> CheckResult:
    """Edge-case batches give finite outputs of the right keys and shapes, or a clear error."""
    from hypothesis import given

    from atft.health.strategies import batch_specs, make_batch

    model.eval()
    foreign = isinstance(model, ForeignModel) or not isinstance(getattr(model, "vsn", None), nn.Module)
    seen: list[str] = []
    failures: list[str] = []

    @given(spec=batch_specs(_max_t(cfg)))
    def prop(spec: dict[str, Any]) -> None:
        b = make_batch(spec["n"], spec["t"], prepared.num_features, len(horizons), edges=spec["edges"],
                       seed=spec["seed"], nan_features=spec["nan_features"],
                       all_targets_missing=spec["all_targets_missing"], days=spec["days"])
        if foreign:  # a user's model gets batches in the contract: missing features are 0 (flagged in observed)
            b.features = torch.nan_to_num(b.features, nan=0.0)
        try:  # the explicit validation (what the loader runs on every batch), then the model
            validate = getattr(model, "validate", None)
            if callable(validate):
                validate(b)
            with torch.no_grad():
                out = model(b)
        except AtftError as exc:  # a clear error is acceptable; it must name the problem
            if not (spec["nan_features"] and "nan" in str(exc).lower()):
                failures.append(f"{spec}: unexpected error {exc}")
            seen.append("clear-error")
            return
        for k in horizons.keys:
            q = out["predictions"][k]
            if q.shape[0] != spec["n"] or out["point"][k].shape != (spec["n"],):
                failures.append(f"{spec}: {k} has shape {tuple(q.shape)}")
            elif not bool(torch.isfinite(q).all()):
                failures.append(f"{spec}: non-finite predictions for {k}")
        if not math.isfinite(float(loss_fn(out, b).total)):
            failures.append(f"{spec}: non-finite loss")
        seen.append("ok")

    prop()
    return CheckResult.compare("hypothesis_edge_case_failures", float(len(failures)), 0.0, "==",
                               f"{len(failures)} of {len(seen)} edge-case batches broke the model: "
                               f"{failures[:2]}. Fix: handle N=1, no edges, T=1 and all-missing targets "
                               "(no per-batch statistics that divide by the batch size).",
                               examples=failures[:5] + [f"examples={len(seen)}"])


def _positional(inner: nn.Module, batch: DayBatch) -> Any:  # row position leaks into the forecast
    out = inner(batch)
    pos = torch.arange(batch.num_stocks, dtype=torch.float32) * 1e-2
    return {**out, "predictions": {k: q + pos[:, None] for k, q in out["predictions"].items()},
            "point": {k: p + pos for k, p in out["point"].items()}}


@health_check(area="properties", fault=with_model_fault(_positional))
def permutation_equivariance(model: nn.Module, cfg: Config, prepared: Any, horizons: Horizons) -> CheckResult:
    """Permuting the stocks of a batch permutes the forecasts and nothing else."""
    from hypothesis import given

    from atft.health.strategies import batch_specs, make_batch

    model.eval()
    worst = 0.0

    @given(spec=batch_specs(_max_t(cfg)))
    def prop(spec: dict[str, Any]) -> None:
        nonlocal worst
        b = make_batch(spec["n"], spec["t"], prepared.num_features, len(horizons),
                       edges=spec["edges"], seed=spec["seed"], days=spec["days"])
        perm = torch.randperm(spec["n"], generator=torch.Generator().manual_seed(spec["seed"]))
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(spec["n"])
        pb = make_batch(spec["n"], spec["t"], prepared.num_features, len(horizons),
                        edges="none", seed=spec["seed"], days=spec["days"])
        pb.features, pb.targets, pb.target_mask = b.features[perm], b.targets[perm], b.target_mask[perm]
        pb.day_index, pb.edge_index, pb.edge_attr = b.day_index[perm], inv[b.edge_index], b.edge_attr
        pb.observed, pb.codes = b.observed[perm], [b.codes[i] for i in perm.tolist()]
        with torch.no_grad():
            a, c = model(b), model(pb)
        for k in horizons.keys:
            ref = a["predictions"][k][perm]
            # float32 noise only: relative 1e-3 (float64 agrees to 1e-12); a real violation is O(1)
            worst = max(worst, float(((ref - c["predictions"][k]).abs() / (1.0 + ref.abs())).max()))

    prop()
    return CheckResult.compare("permutation_equivariance_max_rel_diff", worst, 1e-3, "<",
                               f"permuting the stocks changed the forecasts by {worst:.3g} (relative): the "
                               "model reads a stock's row position. Fix: no positional inputs across stocks; "
                               "per-day operations must be permutation-equivariant.")
