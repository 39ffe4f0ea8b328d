"""Every registered health check, generated from the registry: it passes on a healthy context and
FAILS on its own planted fault (the check is seen failing on what it exists to catch).

The healthy context is the smoke config on its small synthetic panel (60 stocks a day), with the
model checks' stock sampling ON (``health.smoke_stocks`` 32: each check must still pass healthy and
fail on its fault on a sample of every day's stocks); the slow gates read planted
run records instead of 3- and 10-epoch trainings (their measuring side is ``fit`` itself, tested in
``test_train_loop.py``); the cuda checks need a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atft.config import load
from atft.health.checks.quality import planted_run
from atft.health.context import HealthContext
from atft.health.registry import Registry, health_check, run_check
from atft.health.result import CheckResult
from atft.horizons import Horizons

REGISTRY = Registry.builtin()
SAMPLED = 32  # health.smoke_stocks of the healthy context: fewer than the smoke panel's 60 stocks a day
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> HealthContext:
    root = tmp_path_factory.mktemp("registry")
    over = [f"data.cache_dir={root / 'cache'}", f"health.smoke_stocks={SAMPLED}"]
    cfg = load("smoke", over, env={})
    raw = load("smoke", over, apply_env=False)
    hz = Horizons.from_config(cfg)
    good = planted_run([0.5, 0.45, 0.4, 0.38, 0.37], [0.5, 0.47, 0.45, 0.44, 0.43], 0.08, 0.9, hz)
    return HealthContext(cfg=cfg, raw_cfg=raw, workdir=root, environ={},
                         overrides={"fit_3ep": good, "fit_10ep": good})


def test_the_registry_holds_every_builtin_area_and_each_check_a_fault() -> None:
    areas = {c.area for c in REGISTRY}
    assert {"config", "dataset", "horizons", "head", "training", "graph", "properties", "gpu", "quality"} <= areas
    assert not [c.name for c in REGISTRY if c.fault is None]
    assert {c.marker for c in REGISTRY} == {"smoke", "cuda", "slow"}


@pytest.mark.parametrize("name", [c.name for c in REGISTRY])
def test_check_passes_when_healthy_and_fails_on_its_planted_fault(name: str, ctx: HealthContext) -> None:
    check = REGISTRY.get(name)
    if check.marker == "cuda" and not torch.cuda.is_available():
        pytest.skip("the cuda checks measure on a GPU (their verdicts are tested in test_health_checks.py)")
    healthy = run_check(check, ctx.replace(artifacts=_artifacts()))
    # N/A is allowed only where the healthy context has nothing to compare (e.g. model.num_features 0)
    assert healthy and all(r.verdict in ("PASS", "N/A") for r in healthy), [str(r) for r in healthy
                                                                              if r.verdict == "FAIL"]
    assert check.fault is not None
    faulty = run_check(check, check.fault(ctx).replace(artifacts=_artifacts()))
    failed = [r for r in faulty if r.verdict == "FAIL"]
    assert failed, f"{name} did not fail on its planted fault {check.fault.__name__}: {[str(r) for r in faulty]}"
    assert all(r.message for r in failed)


def _artifacts():  # type: ignore[no-untyped-def]
    from atft.health.context import Artifacts

    return Artifacts()


def test_a_check_that_needs_atft_internals_is_not_applicable_to_a_foreign_model(ctx: HealthContext) -> None:
    from atft.health.adapter import ModelSpec

    foreign = ctx.replace(model_spec=ModelSpec(factory="mymodels:build", input_kind="dict"))
    rows = run_check(REGISTRY.get("three_epoch_checkpoint"), foreign)
    assert [r.verdict for r in rows] == ["N/A"] and "mymodels:build" in rows[0].message
    assert rows[0].to_dict()["verdict"] == "N/A"


def test_a_broken_contract_inside_a_check_is_its_fail_row(ctx: HealthContext) -> None:
    from atft.errors import HorizonMismatchError

    @health_check(area="model", fault=lambda c: c)
    def strict(horizons: Horizons) -> CheckResult:
        raise HorizonMismatchError("keys differ: missing ['horizon_1d']")

    rows = run_check(strict.__atft_check__, ctx)  # type: ignore[attr-defined]
    assert [(r.name, r.verdict) for r in rows] == [("strict", "FAIL")] and "horizon_1d" in rows[0].message


def test_an_input_error_while_preparing_is_an_input_problem(tmp_path: Path, ctx: HealthContext) -> None:
    from atft.health.registry import InputProblem

    missing = ctx.replace(dataset=str(tmp_path / "nope.parquet"))
    with pytest.raises(InputProblem) as info:
        run_check(REGISTRY.get("target_nan_ratio"), missing)
    assert info.value.resource == "dataset_results" and "Fix" in str(info.value)


def test_names_must_be_unique() -> None:
    reg = Registry()

    @health_check(area="x", fault=lambda c: c, name="same")
    def a(cfg):  # type: ignore[no-untyped-def]
        return []

    @health_check(area="x", fault=lambda c: c, name="same")
    def b(cfg):  # type: ignore[no-untyped-def]
        return []

    reg.add(a)
    with pytest.raises(ValueError, match="two health checks are named 'same'"):
        reg.add(b)


def test_model_checks_see_smoke_stocks_per_day_and_the_graph_of_those_stocks(ctx: HealthContext) -> None:
    prepared = ctx.resolve("prepared")
    builder = prepared.graph_builder
    assert builder is not None
    for batch in [ctx.resolve("day_batch"), *ctx.resolve("train_batches")]:
        d = batch.meta["date_indices"][0]
        assert batch.num_days == 1 and batch.num_stocks == SAMPLED < int(prepared.panel.valid[d].sum())
        rows = batch.meta["rows"]
        assert list(rows) == sorted(rows) and prepared.panel.valid[d, rows].all()  # valid stocks of the day
        assert batch.codes == [prepared.panel.codes[r] for r in rows]
        assert int(batch.edge_index.max()) < SAMPLED and batch.edge_index.shape[1] > 0  # nodes: the sample
        ei, ea = builder.for_date(prepared.panel, d, rows)  # the graph of the drawn stocks only
        assert torch.equal(batch.edge_index, ei) and torch.equal(batch.edge_attr, ea)
    again = ctx.replace().resolve("day_batch")  # a fresh context draws the same stocks (seeded)
    assert list(again.meta["rows"]) == list(ctx.resolve("day_batch").meta["rows"])
    every = ctx.replace(cfg=_with_smoke_stocks(ctx, 0)).resolve("day_batch")  # 0 = every stock
    d = every.meta["date_indices"][0]
    assert every.num_stocks == int(prepared.panel.valid[d].sum())


def _with_smoke_stocks(ctx: HealthContext, n: int):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(ctx.cfg, health=dataclasses.replace(ctx.cfg.health, smoke_stocks=n))


def test_slow_gates_train_on_the_untuned_gate_seed_only_on_the_embedded_default(tmp_path: Path) -> None:
    """health.gate_seed: the gates' panel is another draw of the embedded default (its own
    sidecar seed); with data.path, a planted dataset or gate_seed -1 they read the data under test."""
    import json

    from atft.synth.cache import sidecar_path

    def context(*over: str) -> HealthContext:
        ov = [f"data.cache_dir={tmp_path / 'cache'}", *over]
        return HealthContext(cfg=load("smoke", ov, env={}), raw_cfg=load("smoke", ov, apply_env=False),
                             workdir=tmp_path, environ={})

    ctx = context("health.gate_seed=4242")
    gate, smoke = Path(ctx.resolve("gate_dataset")), Path(ctx.resolve("dataset"))
    assert gate != smoke
    assert json.loads(sidecar_path(gate).read_text())["params"]["seed"] == 4242
    assert json.loads(sidecar_path(smoke).read_text())["params"]["seed"] == 0
    assert ctx.resolve("gate_prepared") is not ctx.resolve("prepared")
    same = context("health.gate_seed=-1")
    assert same.resolve("gate_dataset") == same.resolve("dataset")
    assert same.resolve("gate_prepared") is same.resolve("prepared")
    user = context("health.gate_seed=4242", f"data.path={smoke}")
    assert Path(user.resolve("gate_dataset")) == smoke
