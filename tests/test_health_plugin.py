"""The installed plugin as a user meets it (pytester, subprocesses): any directory, a wheel install,
the user's own model (dict input) and training step, third-party checks, input errors as FAIL rows.

Every run uses the small ``smoke`` config (its synthetic panel is generated in the run's directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = ["--pyargs", "atft.health_suite", "-m", "smoke", "--atft-config", "smoke", "-p", "no:cacheprovider"]
pytest_plugins = ["pytester"]

MODELS = '''
"""A user's own model: a 2-layer MLP on the last day's features, dict input (the recovery plan's)."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, num_features, keys, hidden=32, detach=False):
        super().__init__()
        self.keys, self.detach = keys, detach
        self.body = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, len(keys))

    def forward(self, inputs):
        x = inputs["features"][:, -1]  # [N, F], the last day
        out = self.head(self.body(x))  # [N, H]
        if self.detach:
            out = out.detach()  # the fault: nothing upstream ever gets a gradient
        return {"predictions": {k: out[:, j] for j, k in enumerate(self.keys)}}


def build(config, num_features):
    return MLP(num_features, [f"horizon_{h}d" for h in config.data.horizons])


def build_wrong_keys(config, num_features):
    return MLP(num_features, [f"horizon_{h}" for h in config.data.horizons])


def build_detached(config, num_features):
    return MLP(num_features, [f"horizon_{h}d" for h in config.data.horizons], detach=True)


def step(model, batch, optimizer):
    """The user's own training step: masked MSE of the point forecasts."""
    out = model(batch.as_dict())["predictions"]
    pred = torch.stack([out[k] for k in model.keys], dim=1)
    mask = ~torch.isnan(batch.targets)
    loss = ((pred - torch.nan_to_num(batch.targets)) ** 2)[mask].mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def step_without_optimizer(model, batch, optimizer):
    out = model(batch.as_dict())["predictions"]
    pred = torch.stack([out[k] for k in model.keys], dim=1)
    loss = ((pred - torch.nan_to_num(batch.targets)) ** 2).mean()
    loss.backward()  # ... and optimizer.step() forgotten
    return loss
'''


def _report(where: Path) -> dict:
    path = where / "health_report.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _rows(report: dict, verdict: str) -> dict[str, str]:
    return {c["name"]: c["message"] for c in report.get("checks", []) if c["verdict"] == verdict}


@pytest.fixture
def user_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(mymodels=MODELS)
    return pytester


def test_the_suite_runs_on_the_users_dict_input_model(user_dir: pytest.Pytester) -> None:
    res = user_dir.runpytest_subprocess(*SUITE, "--atft-model", "mymodels:build", "--atft-model-input", "dict")
    assert res.ret == 0, res.stdout.str()[-4000:]
    report = _rows(_report(user_dir.path), "PASS")
    assert {"head_std[horizon_1d]", "loss_grad_path", "grad_norm[body]", "grad_norm[head]",
            "mini_train_loss_ratio", "horizon_keys_model"} <= set(report)
    na = _rows(_report(user_dir.path), "N/A")
    assert "gat_edges_change_output" in na and "no graph layer" in na["gat_edges_change_output"]
    res.stdout.fnmatch_lines(["atft: model mymodels:build (input dict)*"])


def test_a_model_with_drifted_keys_fails_naming_the_difference(user_dir: pytest.Pytester) -> None:
    res = user_dir.runpytest_subprocess(*SUITE, "--atft-model", "mymodels:build_wrong_keys",
                                        "--atft-model-input", "dict")
    assert res.ret == 1
    failed = _rows(_report(user_dir.path), "FAIL")
    assert "horizon_keys" in failed
    msg = failed["horizon_keys"]
    assert "missing ['horizon_10d', 'horizon_1d', 'horizon_20d', 'horizon_5d']" in msg
    assert "unexpected ['horizon_1', 'horizon_10', 'horizon_20', 'horizon_5']" in msg
    assert "Traceback" not in res.stdout.str()


def test_a_model_whose_forward_detaches_fails_the_gradient_path(user_dir: pytest.Pytester) -> None:
    res = user_dir.runpytest_subprocess(*SUITE, "--atft-model", "mymodels:build_detached",
                                        "--atft-model-input", "dict")
    assert res.ret == 1
    failed = _rows(_report(user_dir.path), "FAIL")
    assert {"loss_grad_path", "grad_norm[body]", "grad_norm[head]"} <= set(failed), sorted(failed)


def test_the_users_training_step_is_the_one_that_runs(user_dir: pytest.Pytester) -> None:
    ok = user_dir.runpytest_subprocess(*SUITE, "--atft-model", "mymodels:build", "--atft-model-input", "dict",
                                       "--atft-train-step", "mymodels:step")
    assert ok.ret == 0, ok.stdout.str()[-4000:]
    ok.stdout.fnmatch_lines(["*train step mymodels:step*"])
    bad = user_dir.runpytest_subprocess(*SUITE, "--atft-model", "mymodels:build", "--atft-model-input", "dict",
                                        "--atft-train-step", "mymodels:step_without_optimizer")
    assert bad.ret == 1
    assert "mini_train_loss_ratio" in _rows(_report(user_dir.path), "FAIL")


def test_input_errors_are_fail_rows_without_a_traceback(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", bad="base: smoke\ntrain:\n  learning_rate: 0.1\n")
    res = pytester.runpytest_subprocess(*SUITE, "--atft-config", "bad.yaml")  # the last one given wins
    assert res.ret == 1
    failed = _rows(_report(pytester.path), "FAIL")
    assert set(failed) == {"inputs[config]"} and "learning_rate" in failed["inputs[config]"]
    out = res.stdout.str()
    assert "Traceback" not in out and "Fix" in out
    res = pytester.runpytest_subprocess(*SUITE, "--atft-data", str(pytester.path / "nope.parquet"))
    assert res.ret == 1
    failed = _rows(_report(pytester.path), "FAIL")
    assert "inputs[data]" in failed and "nope.parquet" in failed["inputs[data]"]
    assert "Traceback" not in res.stdout.str()


def test_third_party_checks_through_a_conftest_hook_and_an_entry_point(pytester: pytest.Pytester) -> None:
    check = '''
from atft.health.registry import health_check
from atft.health.result import CheckResult


def _no_rows(ctx):
    return ctx.replace(day_batch=ctx.resolve("day_batch").without_edges())


@health_check(area="team", fault=_no_rows, name="{name}")
def team_check(day_batch):
    """Our team's rule: a day has at least one edge."""
    n = float(day_batch.edge_index.shape[1])
    return CheckResult.compare("{name}_edges", n, {bound}, ">", "too few edges. Fix: our graph settings.")
'''
    pytester.makeconftest("from teamchecks import team_check\n\n\ndef pytest_atft_register_checks(registry):\n"
                          "    registry.add(team_check)\n")
    pytester.makepyfile(teamchecks=check.format(name="team_conftest", bound=1e9))
    site = pytester.mkdir("site")
    (site / "pluginchecks.py").write_text(check.format(name="team_entry_point", bound=0))
    dist = site / "pluginchecks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pluginchecks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[atft.health_checks]\nteam = pluginchecks:team_check\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(pytester.path), os.environ.get("PYTHONPATH", "")])}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        res = pytester.runpytest_subprocess(*SUITE)
    assert res.ret == 1  # the conftest's check fails (bound 1e9), the entry point's passes
    report = _report(pytester.path)
    assert "team_conftest_edges" in _rows(report, "FAIL") and "team_entry_point_edges" in _rows(report, "PASS")
    res.stdout.fnmatch_lines(["FAILED *test_check?team_conftest?*"])


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """atft installed from a wheel of this checkout (not editable) into a directory of its own."""
    out = tmp_path_factory.mktemp("wheel")
    run = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(run, check=True, capture_output=True, timeout=300)
    wheel = next(out.glob("atft-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(out / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return out / "site"


def test_a_wheel_install_runs_the_suite_from_an_empty_directory_with_abs_data(
        wheel_site: Path, tmp_path: Path) -> None:
    from atft.cli import main

    data = tmp_path / "data" / "panel.parquet"
    assert main(["synth", "--out", str(data), "--config", "smoke"]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}, "PYTHONPATH": str(wheel_site)}
    where = subprocess.run([sys.executable, "-c", "import atft; print(atft.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(wheel_site)), where  # the wheel's atft, not this checkout's
    proc = subprocess.run([sys.executable, "-m", "pytest", *SUITE, "--atft-data", str(data)], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"data {data}" in proc.stdout  # the report header names the data
    assert _report(empty)["data"] == str(data)


def test_abs_data_works_from_the_checkout_root(tmp_path: Path) -> None:
    from atft.cli import main

    data = tmp_path / "panel.parquet"
    assert main(["synth", "--out", str(data), "--config", "smoke"]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "smoke", "--atft-config", "smoke",
                           "--atft-data", str(data), "-p", "no:cacheprovider", "-q",
                           "--atft-report", str(tmp_path / "r.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout and json.loads((tmp_path / "r.json").read_text())["summary"]["failed"] == 0
