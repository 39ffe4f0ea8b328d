"""The health suite run as a user runs it: pytest in a subprocess, on a dataset built by
``atft build-dataset`` from prices, with the user's config; and the same run going red when
a fault is planted (GAT bypass flag in .env, a config whose horizons the data lacks)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Prices of 60 stocks over 420 business days (sector random walks) -> atft build-dataset."""
    tmp = tmp_path_factory.mktemp("user")
    g = np.random.default_rng(7)
    n, d = 60, 420
    dates = [dt.date(2020, 1, 1) + dt.timedelta(days=int(i)) for i in range(d * 7 // 5 + 10)]
    dates = [x for x in dates if x.weekday() < 5][:d]
    sector = np.arange(n) % 6
    r = 0.01 * g.standard_normal((d, 1)) + 0.012 * g.standard_normal((d, 6))[:, sector] \
        + 0.015 * g.standard_normal((d, n))
    close = 100 * np.exp(np.cumsum(r, axis=0))
    prices = pl.DataFrame({
        "code": np.repeat([f"{1300 + i}" for i in range(n)], d),
        "date": dates * n,
        "close": close.T.reshape(-1),
        "volume": g.integers(1_000, 100_000, size=n * d).astype(np.float64),
    })
    src = tmp / "prices.parquet"
    prices.write_parquet(src)
    out = tmp / "dataset.parquet"
    from atft.cli import main

    assert main(["build-dataset", "--prices", str(src), "--out", str(out)]) == 0
    cfg = tmp / "user.yaml"
    cfg.write_text("data:\n  min_stocks: 10\n  sequence_length: 5\ngraph:\n  lookback: 40\n  min_obs: 30\n"
                   "  top_k: 8\nmodel:\n  hidden_size: 16\n  attention_heads: 2\n"
                   "health:\n  smoke_stocks: 32\n")  # the model checks on 32 of the 60 stocks a day
    return out, cfg


def run_suite(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, dict]:
    report = cwd / "report.json"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "smoke", str(REPO / "atft" / "health_suite"), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), "--atft-report", str(report), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, data


def test_suite_passes_on_a_built_dataset(user_dataset, tmp_path):
    data, cfg = user_dataset
    rc, out, report = run_suite(tmp_path, "--atft-data", str(data), "--atft-config", str(cfg))
    assert rc == 0, out[-3000:]
    assert report["summary"]["failed"] == 0 and report["summary"]["checks"] > 40
    names = {c["name"] for c in report["checks"]}
    assert {"target_nan_ratio[feat_ret_1d]", "head_std[horizon_1d]", "grad_norm[gat]",
            "gat_edges_change_output", "env_BYPASS_GAT_COMPLETELY"} <= names
    assert "atft health" in out and "criterion" in out  # the terminal table
    # seconds per check: every row carries its item's, the slowest items and the shared resources are named
    assert all(c["duration_s"] >= 0 for c in report["checks"])
    timing = report["durations"]
    items = {d["check"]: d["seconds"] for d in timing["items"]}
    assert {"mini_train", "head_std", "leakage"} <= set(items) and timing["total_s"] >= max(items.values())
    assert {"prepared", "day_batch", "train_batches"} <= {r["resource"] for r in timing["resources"]}
    assert "seconds per check" in out


def test_suite_goes_red_on_planted_faults(user_dataset, tmp_path):
    data, cfg = user_dataset
    (tmp_path / ".env").write_text("BYPASS_GAT_COMPLETELY=1\n")
    rc, out, report = run_suite(tmp_path, "--atft-data", str(data), "--atft-config", str(cfg))
    assert rc == 1, out[-3000:]
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "env_BYPASS_GAT_COMPLETELY" in failed
    assert ".env" in out
    # the same run with the flag in the environment: the effective model has no GAT at all
    (tmp_path / ".env").unlink()
    rc, out, report = run_suite(tmp_path, "--atft-data", str(data), "--atft-config", str(cfg),
                                env={"BYPASS_GAT_COMPLETELY": "1"})
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert rc == 1 and {"env_BYPASS_GAT_COMPLETELY", "grad_norm[gat]", "gat_edges_change_output"} <= failed
    # deliberate ablation: allowed
    rc, out, _ = run_suite(tmp_path, "--atft-data", str(data), "--atft-config", str(cfg),
                           "--atft-allow-gat-bypass", env={"BYPASS_GAT_COMPLETELY": "1"})
    assert rc == 0, out[-3000:]


def test_suite_rejects_a_config_whose_horizons_the_data_lacks(user_dataset, tmp_path):
    data, cfg = user_dataset
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text() + "data_extra: 1\n")
    rc, out, _ = run_suite(tmp_path, "--atft-data", str(data), "--atft-config", str(bad))
    assert rc != 0 and "data_extra" in out  # unknown config key named
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace("data:\n", "data:\n  target_template: 'target_{h}d'\n"))
    rc, out, report = run_suite(tmp_path, "--atft-data", str(data), "--atft-config", str(other))
    assert rc == 1
    failed = {c["name"] for c in report.get("checks", []) if not c["passed"]}
    assert any(n.startswith("target_columns") for n in failed), failed
    assert "target_1d" in out


def test_training_on_a_built_dataset_fires_no_guard(user_dataset, tmp_path, monkeypatch):
    """Issue 14's 'done when': a dataset built from prices trains without a live guard firing
    (every guard evaluated every step: health.guard_every=1)."""
    data, cfg = user_dataset
    monkeypatch.chdir(tmp_path)
    from atft.cli import main

    rc = main(["train", "--config", str(cfg), "--data-path", str(data), "--max-epochs", "2",
               "train.run_dir=runs", "train.log_dir=logs", "train.num_threads=1", "health.guard_every=1",
               "health.guard_graph_every=2"])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    health = json.loads((run / "health.json").read_text())
    assert health["last_step"] > 0
    fired = {g: [e["step"] for e in v["series"] if "fired" in e] for g, v in health["guards"].items()}
    assert not any(fired.values()), fired
    assert {"loss", "yhat_std", "grad_norm", "update_ratio", "skipped", "graph"} <= set(health["guards"])
