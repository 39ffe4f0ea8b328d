"""Hypothesis: input-shape edge cases and stock-permutation equivariance (smoke)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given

from atft.errors import AtftError
from atft.horizons import Horizons
from health_tests.strategies import batch_specs, make_batch

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def eval_model(atft_config, atft_prepared):
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    torch.manual_seed(atft_config.train.seed)
    model = ATFT_GAT_FAN.from_config(atft_config, atft_prepared.num_features).eval()
    return model


def _max_t(cfg) -> int:
    return min(int(cfg.data.sequence_length), 20)


def test_edge_case_batches_give_finite_outputs_or_clear_error(eval_model, atft_config, atft_prepared, health):
    horizons = Horizons.from_config(atft_config)
    from atft.train.loss import MultiHorizonLoss

    loss_fn = MultiHorizonLoss.from_config(atft_config)
    seen: list[str] = []

    @given(spec=batch_specs(_max_t(atft_config)))
    def prop(spec):
        b = make_batch(spec["n"], spec["t"], atft_prepared.num_features, len(horizons), edges=spec["edges"],
                       seed=spec["seed"], nan_features=spec["nan_features"],
                       all_targets_missing=spec["all_targets_missing"], days=spec["days"])
        try:  # the explicit validation (what the loader runs on every batch), then the model
            eval_model.validate(b)
            with torch.no_grad():
                out = eval_model(b)
        except AtftError as exc:  # a clear error is acceptable; it must name the problem
            assert spec["nan_features"], f"unexpected error for {spec}: {exc}"
            assert "nan" in str(exc).lower(), f"error does not name the cause: {exc}"
            seen.append("clear-error")
            return
        horizons.check_mapping(out["predictions"])
        for k in horizons.keys:
            q = out["predictions"][k]
            assert q.shape == (spec["n"], len(atft_config.model.quantiles)), (k, q.shape, spec)
            assert out["point"][k].shape == (spec["n"],)
            assert bool(torch.isfinite(q).all()), f"non-finite predictions for {spec}"
        lo = loss_fn(out, b)
        assert math.isfinite(float(lo.total)), spec
        seen.append("ok")

    prop()
    from atft.health.result import CheckResult

    health.check(CheckResult.compare("hypothesis_edge_cases_passed", float(len(seen)), 1.0, ">=",
                                     "no edge-case example ran"))


def test_stock_permutation_equivariance(eval_model, atft_config, atft_prepared, health):
    from atft.health.result import CheckResult

    horizons = Horizons.from_config(atft_config)
    worst = 0.0

    @given(spec=batch_specs(_max_t(atft_config)))
    def prop(spec):
        nonlocal worst
        b = make_batch(spec["n"], spec["t"], atft_prepared.num_features, len(horizons),
                       edges=spec["edges"], seed=spec["seed"], days=spec["days"])
        perm = torch.randperm(spec["n"], generator=torch.Generator().manual_seed(spec["seed"]))
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(spec["n"])
        pb = make_batch(spec["n"], spec["t"], atft_prepared.num_features, len(horizons),
                        edges="none", seed=spec["seed"], days=spec["days"])
        pb.features, pb.targets, pb.target_mask = b.features[perm], b.targets[perm], b.target_mask[perm]
        pb.day_index, pb.edge_index, pb.edge_attr = b.day_index[perm], inv[b.edge_index], b.edge_attr
        pb.observed, pb.codes = b.observed[perm], [b.codes[i] for i in perm.tolist()]
        with torch.no_grad():
            a, c = eval_model(b), eval_model(pb)
        for k in horizons.keys:
            ref = a["predictions"][k][perm]
            # float32 noise only: relative 1e-3 (float64 agrees to 1e-12); a real violation is O(1)
            d = float(((ref - c["predictions"][k]).abs() / (1.0 + ref.abs())).max())
            worst = max(worst, d)
            assert d < 1e-3, f"{k}: permuting stocks changed outputs by {d} (relative) for {spec}"

    prop()
    health.record(CheckResult.compare("permutation_equivariance_max_rel_diff", worst, 1e-3, "<",
                                      "outputs are not permutation-equivariant"))
