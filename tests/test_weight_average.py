"""``train.ema_decay``: the EMA of the weights (``atft.train.averaging``) inside ``fit``.

The average follows its recurrence step by step; ``fit`` validates, keeps (``best.pt``) and scores
the averaged weights, not the trained ones; a resumed run continues the same average; a resume
with another decay and an out-of-range decay are input errors naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atft.config import load
from atft.errors import ConfigError, InputError
from atft.train.averaging import WeightAverage
from atft.train.checkpoint import load_model
from atft.train.fit import fit
from atft.train.interrupt import RunInterrupted
from atft.train.prepare import prepare
from atft.train.step import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")
DECAY = 0.5  # a short window, so that 4 steps leave the average far from the last weights


def _config(root: Path, *overrides: str):  # noqa: ANN202 - a Config
    base = [f"data.cache_dir={root / 'cache'}", f"train.run_dir={root / 'runs'}", f"train.log_dir={root / 'logs'}",
            "train.progress=false", "train.device=cpu", "train.max_epochs=2", "train.max_steps_per_epoch=2",
            "data.val_fraction=0.1", "data.test_fraction=0.1", f"train.ema_decay={DECAY}"]
    return load("smoke", base + list(overrides), env={})


def test_the_average_follows_its_recurrence() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    avg = WeightAverage(model, 0.8)
    expected: list[torch.Tensor] | None = None
    for _ in range(5):
        loss = model(torch.randn(8, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg.update()
        now = [p.detach().clone() for p in model.parameters()]
        expected = now if expected is None else [0.8 * e + 0.2 * p for e, p in zip(expected, now, strict=True)]
    assert avg.steps == 5
    assert expected is not None
    for e, a, p in zip(expected, avg.module.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, e)
        assert not torch.equal(a, p)  # the average is not the trained weights


def test_fit_validates_keeps_and_scores_the_averaged_weights(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "train.max_epochs=1")  # one epoch: the best weights are its end's
    prepared = prepare(cfg)
    res = fit(cfg, prepared, run_id="ema")
    assert res.best_epoch == 0
    ck = torch.load(res.run_dir / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(res.run_dir / "checkpoints" / "best.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in ck["ema"]["state_dict"].items() if k.startswith("module.")}
    assert ck["ema"]["decay"] == DECAY and int(ck["ema"]["state_dict"]["n_averaged"]) == 2
    differ = [k for k in ck["state_dict"] if not torch.equal(ck["state_dict"][k], ema[k])]
    assert differ, "the average equals the trained weights: it is not averaging"
    assert all(torch.equal(best["state_dict"][k], ema[k]) for k in ema), "best.pt is not the average"
    restored = load_model(res.run_dir / "checkpoints" / "best.pt")
    again = evaluate(restored.model, prepared.loader("val", shuffle=False), None, prepared.horizons,
                     min_stocks=cfg.data.min_stocks)
    final = json.loads((res.run_dir / "metrics.json").read_text())
    assert again.metrics["horizon_1d"]["ic"] == pytest.approx(final["val"]["horizon_1d"]["ic"], abs=1e-7)
    assert res.history[res.best_epoch]["val/ic_1d"] == pytest.approx(final["val"]["horizon_1d"]["ic"], abs=1e-7)


def test_a_resumed_run_continues_the_same_average(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    prepared = prepare(cfg)
    ref = fit(cfg, prepared, run_id="ref")
    asked = {"n": 0}

    def stop_mid_epoch_1() -> bool:
        asked["n"] += 1
        return asked["n"] >= 5  # asked once before training, then after every step

    with pytest.raises(RunInterrupted):
        fit(cfg, prepared, run_id="cut", stop=stop_mid_epoch_1)
    with pytest.raises(InputError, match="train.ema_decay=0.5"):
        fit(_config(tmp_path, "train.ema_decay=0.9"), prepared, resume=tmp_path / "runs" / "cut")
    with pytest.raises(InputError, match="train.ema_decay=0.5"):
        fit(_config(tmp_path, "train.ema_decay=0"), prepared, resume=tmp_path / "runs" / "cut")
    res = fit(cfg, prepared, resume=tmp_path / "runs" / "cut")
    for name in ("best.pt", "last.pt"):
        a = torch.load(ref.run_dir / "checkpoints" / name, weights_only=True)
        b = torch.load(res.run_dir / "checkpoints" / name, weights_only=True)
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        if name == "last.pt":
            ea, eb = a["ema"]["state_dict"], b["ema"]["state_dict"]
            assert all(torch.equal(ea[k], eb[k]) for k in ea)


@pytest.mark.parametrize("decay", ["1.0", "-0.1"])
def test_a_decay_outside_0_1_is_a_config_error(tmp_path: Path, decay: str) -> None:
    with pytest.raises(ConfigError, match="train.ema_decay"):
        _config(tmp_path, f"train.ema_decay={decay}")
