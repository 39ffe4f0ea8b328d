"""Live guards in ``fit``: each planted fault is stopped or warned about within its patience, with the
right diagnosis; a clean run is never stopped; ``atft train`` exits 3 and keeps last.pt and health.json.

Runs use the smoke config with a guard check every step (``health.guard_every=1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from atft.config import Config, load
from atft.errors import AtftWarning
from atft.train.fit import fit
from atft.train.guards import GuardStop
from atft.train.prepare import prepare

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 6  # optimizer steps per epoch in these runs


def config(root: Path, *overrides: str) -> Config:
    base = [f"data.cache_dir={root / 'cache'}", f"train.run_dir={root / 'runs'}", f"train.log_dir={root / 'logs'}",
            "train.progress=false", "train.device=cpu", "train.max_epochs=2", f"train.max_steps_per_epoch={STEPS}",
            "health.guard_every=1", "health.guard_graph_every=2"]
    return load("smoke", base + list(overrides), env={})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guards")


@pytest.fixture(scope="module")
def prepared(root: Path) -> Any:
    return prepare(config(root))


def _series(run_dir: Path, guard: str) -> list[dict[str, Any]]:
    return json.loads((run_dir / "health.json").read_text())["guards"][guard]["series"]


def _fired(run_dir: Path, guard: str) -> list[int]:
    return [e["step"] for e in _series(run_dir, guard) if "fired" in e]


def test_a_clean_run_is_never_stopped_and_records_every_series(root: Path, prepared: Any) -> None:
    res = fit(config(root), prepared, run_id="clean")  # AtftWarning is an error in this suite: none fires
    health = json.loads((res.run_dir / "health.json").read_text())
    assert health["last_step"] == 2 * STEPS
    for guard in ("loss", "yhat_std", "grad_norm", "update_ratio", "skipped", "graph"):
        assert not _fired(res.run_dir, guard), guard
    assert len(_series(res.run_dir, "yhat_std")) == 2 * STEPS and len(_series(res.run_dir, "graph")) == STEPS
    first = _series(res.run_dir, "grad_norm")[0]
    assert {"vsn", "tft", "gat", "fusion", "heads"} <= set(first)


def test_a_detached_loss_stops_at_the_first_step(root: Path, prepared: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from atft.train.loss import MultiHorizonLoss

    real = MultiHorizonLoss.forward

    def detached(self: Any, output: Any, batch: Any) -> Any:
        out = real(self, output, batch)
        out.total = out.total.detach()  # the unwrapped-dict bug's constant
        return out

    monkeypatch.setattr(MultiHorizonLoss, "forward", detached)
    with pytest.raises(GuardStop, match=r"health guard 'loss' \(stop\): the loss has no gradient path at step 0"):
        fit(config(root), prepared, run_id="detached")
    assert (root / "runs" / "detached" / "checkpoints" / "last.pt").exists()
    assert _fired(root / "runs" / "detached", "loss") == [0]


def test_a_zeroed_frozen_head_stops_on_yhat_std(root: Path, prepared: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from atft.model.heads import QuantileHead

    real = QuantileHead.reset_parameters

    def zero(self: QuantileHead) -> None:
        real(self)
        torch.nn.init.zeros_(self.out.weight)
        self.out.weight.requires_grad_(False)  # a head stuck at the cross-sectional mean

    monkeypatch.setattr(QuantileHead, "reset_parameters", zero)
    cfg = config(root, "model.linear_skip=false", "model.graph_skip=false")
    patience = cfg.health.guards.yhat_std.patience
    with pytest.raises(GuardStop, match=r"'yhat_std' \(stop\).*on every horizon.*Likely causes: head init"):
        fit(cfg, prepared, run_id="zero_head")
    assert _fired(root / "runs" / "zero_head", "yhat_std") == [patience - 1]


@pytest.mark.parametrize("fault", ["optimizer_never_steps", "lr_1e-12"])
def test_no_learning_warns_on_the_update_size(fault: str, root: Path, prepared: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    overrides: list[str] = []
    if fault == "optimizer_never_steps":
        monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    else:
        overrides.append("train.lr=1e-12")
    cfg = config(root, *overrides)
    with pytest.warns(AtftWarning) as seen:  # (nothing moves, so the FAN/SAN gate stays at 0: grad_norm warns too)
        res = fit(cfg, prepared, run_id=fault)
    text = " ".join(str(w.message) for w in seen)
    assert "'update_ratio' (warn): update size" in text and "Likely causes: train.lr far too low" in text
    assert _fired(res.run_dir, "update_ratio")[0] == cfg.health.guards.update_ratio.patience - 1


def test_a_loader_without_targets_warns_then_stops(root: Path, prepared: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from atft.data.loader import DayBatchLoader

    real = DayBatchLoader._batch

    def no_targets(self: DayBatchLoader, days: Any, **kw: Any) -> Any:
        b = real(self, days, **kw)
        b.targets = torch.full_like(b.targets, float("nan"))
        b.target_mask = torch.zeros_like(b.target_mask)
        return b

    monkeypatch.setattr(DayBatchLoader, "_batch", no_targets)
    with pytest.warns(AtftWarning, match=r"'skipped' \(warn\): 100% of the last 1 batches were skipped"), \
            pytest.raises(GuardStop, match=r"'loss' \(stop\): epoch 0 ended with 0 optimizer steps"):
        fit(config(root, "train.max_steps_per_epoch=0"), prepared, run_id="no_targets")


def test_a_zeroed_gat_output_warns_on_its_gradient_and_its_effect(root: Path, prepared: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from atft.model.gat import GraphAttentionEncoder

    real = GraphAttentionEncoder.forward

    def zeroed(self: Any, *args: Any, **kwargs: Any) -> Any:
        z, attn = real(self, *args, **kwargs)
        return z * 0.0, attn

    monkeypatch.setattr(GraphAttentionEncoder, "forward", zeroed)
    with pytest.warns(AtftWarning) as seen:
        res = fit(config(root), prepared, run_id="gat_zero")
    text = " ".join(str(w.message) for w in seen)
    assert "'grad_norm' (warn): gradient norm of ['gat', 'gat_input']" in text  # the GAT and its input projection
    assert "'graph' (warn): removing the GAT's edges moves the forecasts by 0" in text
    assert _fired(res.run_dir, "graph") and _fired(res.run_dir, "grad_norm")


def test_atft_train_exits_3_with_a_one_line_diagnosis(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from atft.cli import main
    from atft.train.loss import MultiHorizonLoss

    real = MultiHorizonLoss.forward

    def detached(self: Any, output: Any, batch: Any) -> Any:
        out = real(self, output, batch)
        out.total = out.total.detach()
        return out

    monkeypatch.setattr(MultiHorizonLoss, "forward", detached)
    args = ["train", "--config", "smoke", f"data.cache_dir={root / 'cache'}", f"train.run_dir={root / 'cli_runs'}",
            f"train.log_dir={root / 'logs'}", "train.progress=false", "train.max_epochs=1"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("atft train: stopped by a health guard: health guard 'loss' (stop)")
    run = next((root / "cli_runs").iterdir())
    assert (run / "health.json").exists() and (run / "checkpoints" / "last.pt").exists()
    log = next((root / "logs").glob(f"train_{run.name}.log")).read_text()
    assert "health guard 'loss' (stop)" in log


def test_atft_report_plots_a_run_directory(root: Path, prepared: Any, tmp_path: Path) -> None:
    from atft.cli import main

    res = fit(config(root), prepared, run_id="for_report")
    assert main(["report", str(res.run_dir), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "guards: none fired" in text and str(prepared.source) in text
    for png in ("guards.png", "loss_curves.png", "ic_per_epoch.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 10_000
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # not a run directory


def test_without_a_terminal_a_progress_line_comes_every_log_every_s(root: Path, prepared: Any,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import re

    cfg = config(root, "train.progress=true", "train.log_every_s=0.05", "train.max_steps_per_epoch=0",
                 "train.max_epochs=1")
    with caplog.at_level(logging.INFO, logger="atft.train"):
        fit(cfg, prepared, run_id="progress")  # pytest's stdout is not a TTY
    lines = [r for r in caplog.records if r.getMessage().startswith("progress: step")]
    assert len(lines) >= 3
    assert re.match(r"progress: step \d+/\d+, \d+ samples/s, loss \d+\.\d{4}, ETA \d:\d\d:\d\d$", lines[-1].getMessage())
    gaps = [b.created - a.created for a, b in zip(lines, lines[1:], strict=False)]
    assert max(gaps) < 30.0  # the default log_every_s bounds the silence (here 0.05 s between lines)
