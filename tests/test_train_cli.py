"""`atft train` through ``atft.cli.main``: the closing table next to the oracle IC, --resume, bad keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import torch

from atft.cli import main
from atft.cli.train import oracle_for
from atft.config import load
from atft.horizons import Horizons
from atft.synth.cache import ensure_default_panel, sidecar_path, truth_path
from atft.synth.oracle import oracle_on_predictions

HEADER = ("horizon", "IC(test)", "95%", "CI", "RankIC", "Sharpe", "yhat_std", "oracle", "IC", "IC/oracle",
          "oracle(test", "rows)", "IC/oracle(test", "rows)")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train_cli")


def overrides(root: Path) -> list[str]:
    return [f"data.cache_dir={root / 'cache'}", f"train.run_dir={root / 'runs'}",
            f"train.log_dir={root / 'logs'}", "train.progress=false", "train.device=cpu",
            "train.max_steps_per_epoch=2", "data.val_fraction=0.1", "data.test_fraction=0.1"]


def run_dir_of(out: str) -> Path:
    m = re.search(r"^run: (\S+)  best epoch (-?\d+)", out, re.M)
    assert m, out
    return Path(m.group(1))


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of the closing table by horizon key (cells split on whitespace; the CI spans two)."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["horizon", "IC(test)"])
    assert tuple(lines[start].split()) == HEADER
    return {ln.split()[0]: ln.split() for ln in lines[start + 1:] if ln.strip()}


def test_train_prints_ic_next_to_the_oracle_then_resumes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--config", "smoke", "--max-epochs", "1", *overrides(root)])
    out = capsys.readouterr().out
    assert rc == 0
    run_dir = run_dir_of(out)
    assert run_dir.parent == root / "runs"
    cfg = load("smoke", overrides(root), env={})
    horizons = Horizons.from_config(cfg)
    final = json.loads((run_dir / "metrics.json").read_text())
    oracle = json.loads(sidecar_path(ensure_default_panel(cfg)).read_text())["oracle_ic"]
    rows = table_rows(out)
    assert list(rows) == horizons.keys
    same = oracle_on_predictions(pl.read_parquet(run_dir / "predictions_test.parquet"),
                                 truth_path(ensure_default_panel(cfg)), horizons, cfg.data.min_stocks)
    for key, cells in rows.items():
        ic, o, s = final["test"][key]["ic"], oracle[key], same[key]["oracle_ic"]
        assert cells[1] == f"{ic:.4f}"
        assert cells[4] == f"{final['test'][key]['rank_ic']:.4f}"
        assert cells[-4] == f"{o:.4f}" and o > 0
        assert cells[-3] == f"{ic / o:.2f}"
        assert cells[-2] == f"{s:.4f}" and s != o  # the test rows' own oracle, not the panel's
        assert cells[-1] == f"{ic / s:.2f}"
    assert final["oracle"]["oracle_ic"] == oracle
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1

    # resume by run id (found under train.run_dir from the override), one more epoch
    rc = main(["train", "--resume", run_dir.name, "--max-epochs", "2", f"train.run_dir={root / 'runs'}"])
    out = capsys.readouterr().out
    assert rc == 0 and run_dir_of(out) == run_dir
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    assert load(run_dir / "config.yaml", env={}).train.max_epochs == 2
    assert "resumed" in (root / "logs" / f"train_{run_dir.name}.log").read_text()
    ck = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and len(ck["history"]) == 2

    # resume by path, one more epoch
    rc = main(["train", "--resume", str(run_dir), "--max-epochs", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and run_dir_of(out) == run_dir and list(table_rows(out)) == horizons.keys
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


@pytest.mark.parametrize(("bad", "named"), [("train.no_such_key=1", "'train.no_such_key'"),
                                            ("model.hiden_size=8", "'model.hiden_size'"),
                                            ("nosection.x=1", "'nosection'")])
def test_unknown_config_key_exits_2_naming_it(root: Path, capsys: pytest.CaptureFixture[str], bad: str,
                                              named: str) -> None:
    rc = main(["train", "--config", "smoke", *overrides(root), bad])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("atft train: error:") and f"key {named}" in err and "Fix" in err


def test_resume_of_a_missing_run_exits_2(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--resume", "no_such_run", *overrides(root)])
    err = capsys.readouterr().err
    assert rc == 2 and "no_such_run" in err and "last.pt not found" in err


def test_oracle_lookup_without_generate_never_writes_a_panel(tmp_path: Path) -> None:
    cfg = load("smoke", [f"data.cache_dir={tmp_path / 'empty'}"], env={})
    assert oracle_for(cfg, generate=False) is None
    assert not (tmp_path / "empty").exists()
    cfg = load("smoke", [f"data.path={tmp_path / 'user.parquet'}"], env={})
    assert oracle_for(cfg) is None  # user data without a sidecar: no oracle column
