"""Planted-fault tests: every health check is shown to FAIL on the fault it exists for
(with a message naming the cause) and to pass on the healthy case."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

from atft.config import load
from atft.health.config_checks import (
    check_feature_count,
    check_gat_enabled,
    check_graph_env_flags,
    read_dotenv,
)
from atft.health.gpu import check_gpu_utilization, check_memory_freed
from atft.health.model_checks import (
    check_gat_effect,
    check_head_spread,
    check_horizon_keys,
    check_no_leak,
    check_training_step,
    mini_train,
)
from atft.health.result import CheckResult
from atft.health.train_checks import checkpoint_checks, max_rising_run, quality_gate, slope
from atft.horizons import Horizons
from atft.synth.batches import make_batch


@pytest.fixture(scope="module")
def cfg():
    return load("smoke", apply_env=False)


@pytest.fixture(scope="module")
def horizons(cfg):
    return Horizons.from_config(cfg)


@pytest.fixture
def model(cfg):
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    torch.manual_seed(0)
    return ATFT_GAT_FAN.from_config(cfg, 6)


@pytest.fixture
def batch(horizons):
    return make_batch(40, 10, 6, len(horizons), edges="random", seed=1)


@pytest.fixture
def loss_fn(cfg):
    from atft.train.loss import MultiHorizonLoss

    return MultiHorizonLoss.from_config(cfg)


def failed(results: CheckResult | list[CheckResult]) -> list[CheckResult]:
    rs = results if isinstance(results, list) else [results]
    return [r for r in rs if not r.passed]


# ------------------------------------------------------------------ result object
def test_check_result_nan_never_passes():
    assert not CheckResult.compare("x", float("nan"), 0.0, "<=").passed
    assert CheckResult.compare("x", 0.0, 0.0, "<=").passed
    assert not CheckResult.compare("x", 0.1, 0.0, "<=", "too big").passed


# ------------------------------------------------------------------ config / env
def test_gat_disabled_in_config_fails(cfg):
    off = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_gat=False))
    r = check_gat_enabled(off)
    assert not r.passed and "use_gat=False" in r.message
    assert check_gat_enabled(cfg).passed
    assert check_gat_enabled(off, allow_bypass=True).passed


def test_bypass_flag_in_environment_fails():
    rs = check_graph_env_flags({"BYPASS_GAT_COMPLETELY": "1"}, {})
    bad = failed(rs)
    assert [r.name for r in bad] == ["env_BYPASS_GAT_COMPLETELY"]
    assert "environment" in bad[0].message
    assert not failed(check_graph_env_flags({"BYPASS_GAT_COMPLETELY": "0"}, {}))


def test_bypass_flag_in_dotenv_fails_and_is_not_executed(tmp_path):
    marker = tmp_path / "executed"
    env = tmp_path / ".env"
    env.write_text(f"# comment\nexport DISABLE_GRAPH_BUILDER=1\nBYPASS_GAT_COMPLETELY='true'  \n"
                   f"EVIL=$(touch {marker})\n")
    parsed = read_dotenv(env)
    assert parsed["DISABLE_GRAPH_BUILDER"] == "1" and parsed["BYPASS_GAT_COMPLETELY"] == "true"
    bad = failed(check_graph_env_flags({}, parsed, source=str(env)))
    assert {r.name for r in bad} == {"env_BYPASS_GAT_COMPLETELY", "env_DISABLE_GRAPH_BUILDER"}
    assert str(env) in bad[0].message
    assert not marker.exists()


def test_feature_count_mismatch_fails(cfg):
    wrong = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_features=82))
    r = check_feature_count(wrong, 389)
    assert not r.passed and "82" in r.message and "389" in r.message
    assert check_feature_count(wrong, 82).passed


# ------------------------------------------------------------------ horizons
def test_horizon_key_drift_fails(horizons, model, batch, loss_fn):
    with torch.no_grad():
        out = model(batch)
    cols = horizons.targets
    ok = check_horizon_keys(horizons, cols, out, horizons.keys, horizons.keys)
    assert not failed(ok)
    # dataset targets under another template (target_1d instead of feat_ret_1d)
    bad = failed(check_horizon_keys(horizons, [f"target_{h}d" for h in horizons], out, horizons.keys,
                                    horizons.keys))
    assert [r.name for r in bad] == ["horizon_keys_dataset"] and "horizon_1d" in bad[0].message
    # model keys drifted to horizon_1 / point_horizon_1
    drift = {"predictions": {k.removesuffix("d"): v for k, v in out["predictions"].items()}}
    bad = failed(check_horizon_keys(horizons, cols, drift, horizons.keys, horizons.keys))
    assert [r.name for r in bad] == ["horizon_keys_model"] and "horizon_1" in bad[0].message
    # the top-level dict read instead of output["predictions"]
    bad = failed(check_horizon_keys(horizons, cols, {"point": out["point"]}, [], horizons.keys))
    assert {r.name for r in bad} == {"horizon_keys_model", "horizon_keys_loss"}


# ------------------------------------------------------------------ head
def test_head_with_zeroed_weights_fails(model, batch, horizons):
    results, _ = check_head_spread(model, batch, horizons, 0.001)
    assert not failed(results)
    with torch.no_grad():
        for p in model.parts()["heads"].parameters():
            p.zero_()
    bad = failed(check_head_spread(model, batch, horizons, 0.001)[0])
    assert {r.name for r in bad} >= {f"head_std[{k}]" for k in horizons.keys}
    assert "constant predictions" in bad[0].message


# ------------------------------------------------------------------ training step / GAT
def test_training_step_passes_on_healthy_model(model, batch, loss_fn):
    assert not failed(check_training_step(model, batch, loss_fn))


def test_zero_loss_from_unwrapped_prediction_dict_fails(model, batch, horizons):
    """The original bug: train_epoch read the top-level dict, found no horizon, returned 0."""

    @dataclasses.dataclass
    class Out:
        total: torch.Tensor
        per_horizon: dict[str, torch.Tensor]
        n_valid: int = 0

    def buggy_loss(output: dict[str, Any], b: Any) -> Out:
        matched = [k for k in output if k in horizons.keys]  # top-level: never matches
        return Out(torch.zeros(()) if not matched else torch.ones(()), {})

    bad = failed(check_training_step(model, batch, buggy_loss))
    names = {r.name for r in bad}
    assert {"loss_positive", "loss_grad_path"} <= names
    assert any(n.startswith("grad_norm[") for n in names)


def test_gat_bypassed_fails(cfg, batch, horizons, loss_fn):
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    torch.manual_seed(0)
    on = ATFT_GAT_FAN.from_config(cfg, 6)
    assert check_gat_effect(on, batch, horizons).passed
    off_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_gat=False))
    off = ATFT_GAT_FAN.from_config(off_cfg, 6)
    r = check_gat_effect(off, batch, horizons)
    assert not r.passed and "bypassed" in r.message
    bad = failed(check_training_step(off, batch, loss_fn))
    assert [x.name for x in bad] == ["grad_norm[gat]", "grad_norm[fusion]"]
    assert "BYPASS_GAT_COMPLETELY" in bad[0].message
    assert not failed(check_training_step(off, batch, loss_fn, allow_gat_bypass=True))


# ------------------------------------------------------------------ leaks / mini-train
def test_loop_keeping_loss_tensors_alive_fails(model, batch, loss_fn):
    kept: list[torch.Tensor] = []

    def leaky() -> None:
        for _ in range(3):
            kept.append(loss_fn(model(batch), batch).total)  # loss tensors with graphs kept

    r = check_no_leak(leaky)
    assert not r.passed and r.figure > 0 and "still referenced" in r.message
    kept.clear()

    def clean() -> None:
        total = 0.0
        for _ in range(3):
            total += float(loss_fn(model(batch), batch).total.detach())

    check_no_leak(clean)  # warm caches (lazily built constants)
    assert check_no_leak(clean).passed


def test_mini_train_detects_frozen_model(model, batch, loss_fn, horizons):
    ok = mini_train(model, [batch], loss_fn, steps=8, lr=3e-3, horizons=horizons, min_std=0.001)
    assert not failed(ok), [str(r) for r in failed(ok)]

    def frozen_step(m, b, lf, opt):  # what a detached zero loss does: nothing moves
        opt.zero_grad(set_to_none=True)

    bad = failed(mini_train(model, [batch], loss_fn, steps=4, lr=3e-3, horizons=horizons, min_std=0.001,
                            step_fn=frozen_step))
    assert [r.name for r in bad] == ["mini_train_loss_ratio"]


# ------------------------------------------------------------------ GPU verdicts (planted figures)
def test_cuda_memory_not_freed_fails():
    ok = check_memory_freed(100.0, 110.0, [300.0] * 8, 400.0, tolerance_mb=64)
    assert not failed(ok)
    bad = failed(check_memory_freed(100.0, 900.0, [300.0 + 100 * i for i in range(8)], 1200.0, 64))
    assert {r.name for r in bad} == {"cuda_memory_freed_mb", "cuda_memory_step_growth_mb"}


def test_low_gpu_utilization_fails():
    assert not failed(check_gpu_utilization([0.9, 0.95, 0.8, 0.85], 0.5, 1000.0))
    bad = failed(check_gpu_utilization([0.1, 0.2, 0.15, 0.9], 0.5, 50.0))
    assert bad and "loader" in bad[0].message
    assert failed(check_gpu_utilization([], 0.5, 0.0))


# ------------------------------------------------------------------ quality gates (planted runs)
def _run(train, val, ic, sharpe, horizons, yhat_std=0.01):
    hist = [{"epoch": i, "train/total_loss": a, "val/total_loss": b} for i, (a, b) in enumerate(zip(train, val, strict=True))]
    block = {"ic": ic, "sharpe": sharpe, "yhat_std": yhat_std, "n_dates": 100, "ic_ci95": [ic - 0.01, ic + 0.01]}
    return hist, {"test": {k: dict(block) for k in horizons.keys}}


def test_quality_gate_pass_and_planted_failures(cfg, horizons):
    h = cfg.health
    good = _run([0.5, 0.45, 0.4, 0.38], [0.5, 0.47, 0.45, 0.44], 0.08, 0.9, horizons)
    assert not failed(quality_gate(*good, horizons, h, {"horizon_1d": 0.09}))
    overfit = _run([0.5, 0.4, 0.3, 0.2, 0.1], [0.5, 0.52, 0.55, 0.6, 0.7], 0.08, 0.9, horizons)
    names = {r.name for r in failed(quality_gate(*overfit, horizons, h))}
    assert {"val_loss_slope", "val_loss_max_rising_epochs", "train_val_gap"} <= names
    weak = _run([0.5, 0.45, 0.4, 0.38], [0.5, 0.47, 0.45, 0.44], 0.02, 0.05, horizons)
    names = {r.name for r in failed(quality_gate(*weak, horizons, h, {"horizon_1d": 0.10}))}
    assert names == {"ic[horizon_1d]", "sharpe[horizon_1d]", "ic_oracle_fraction[horizon_1d]"}


def test_three_epoch_checkpoint_detects_constant_predictions(cfg, horizons):
    ok = _run([0.4, 0.3, 0.25], [0.4, 0.35, 0.3], 0.03, 0.5, horizons)
    assert not failed(checkpoint_checks(*ok, horizons, cfg.health, 0.01))
    const = _run([0.0005] * 3, [0.0005] * 3, float("nan"), float("nan"), horizons, yhat_std=0.0)
    names = {r.name for r in failed(checkpoint_checks(*const, horizons, cfg.health, 0.01))}
    assert {f"epoch3_yhat_std[{k}]" for k in horizons.keys} | {"epoch3_ic[horizon_1d]"} <= names


def test_trend_helpers():
    assert slope([3, 2, 1]) == pytest.approx(-1.0)
    assert max_rising_run([1, 2, 3, 2, 3]) == 2


# ------------------------------------------------------------------ report
def test_report_renders_markdown_and_pngs(tmp_path):
    from atft.health.report import render

    rep = {"checks": [CheckResult.compare("a", 1.0, 0.0, ">").to_dict(),
                      CheckResult.compare("b", 0.0, 0.0, ">", "b is zero").to_dict()],
           "artifacts": [{"kind": "history", "run": "r", "epochs": [
               {"epoch": i, "train/total_loss": 1 / (i + 1), "val/total_loss": 1.1 / (i + 1),
                "val/ic_1d": 0.01 * i} for i in range(3)]},
               {"kind": "predictions", "source": "s", "values": {"horizon_1d": [0.1, -0.1, 0.0]}}]}
    md = render(json.loads(json.dumps(rep)), tmp_path)
    text = md.read_text()
    assert "| b | 0 | > 0 | **FAIL**" in text and "b is zero" in text
    for png in ("loss_curves.png", "ic_per_epoch.png", "predictions.png"):
        assert (tmp_path / png).stat().st_size > 1000
