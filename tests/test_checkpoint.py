"""Checkpoints: atomic writes, weights_only round trips, F and switch mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atft.config import Config, load
from atft.data.normalize import Normalizer
from atft.errors import ConfigError, InputError, ShapeError
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.synth.batches import random_day_batch
from atft.train import checkpoint as ckpt_mod
from atft.train.checkpoint import load_checkpoint, load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread, restored after the module
F = 5


def smoke(*overrides: str) -> Config:
    return load("smoke", list(overrides), apply_env=False)


def fitted_normalizer() -> Normalizer:
    """A normalizer in the state a run leaves (F feature bounds, 4 horizon scales)."""
    norm = Normalizer()
    norm.load_state_dict({"winsor_quantile": 0.01, "clip": 4.0, "target_scaling": "cs_demean",
                          "feature_names": [f"x{k}" for k in range(F)], "lower": [-3.0 - k for k in range(F)],
                          "upper": [3.0 + k for k in range(F)], "target_std": [0.01, 0.02, 0.03, 0.04],
                          "num_train_dates": 77})
    return norm


NORM = fitted_normalizer()


def trained_state(tmp_path: Path) -> tuple[ATFT_GAT_FAN, Config, dict]:
    """A model after one optimizer step (so the optimizer has state to store)."""
    cfg = smoke("train.lr=0.01")
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, F)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    out = model(random_day_batch(8, cfg.data.sequence_length, F, 4, k=2, seed=1))
    sum(q.sum() for q in out["predictions"].values()).backward()
    opt.step()
    extra = {"epoch": 3, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "best_metric": float("nan"), "history": [{"epoch": 0, "val/ic_1d": 0.01}],
             "note": "resume me", "flags": [True, None]}
    return model.eval(), cfg, extra


def test_round_trip_identical_outputs_and_extra(tmp_path: Path) -> None:
    model, cfg, extra = trained_state(tmp_path)
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, model, cfg, NORM, extra=extra)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    ck = load_checkpoint(path)
    assert ck["num_features"] == F and ck["format_version"] == ckpt_mod.FORMAT_VERSION
    assert ck["config"]["model"]["hidden_size"] == 16 and isinstance(ck["config"], dict)
    assert ck["epoch"] == 3 and ck["note"] == "resume me" and ck["flags"] == [True, None]
    assert ck["history"] == [{"epoch": 0, "val/ic_1d": 0.01}]
    assert torch.equal(ck["torch_rng"], extra["torch_rng"])
    opt = torch.optim.AdamW(model.parameters())
    opt.load_state_dict(ck["optimizer"])  # optimizer state survives weights_only
    assert opt.state_dict()["param_groups"][0]["lr"] == 0.01

    loaded, stored_cfg, norm = load_model(path, cfg, F)
    assert not loaded.training and stored_cfg == cfg
    assert norm.state_dict() == NORM.state_dict()  # the normalizer comes back exactly
    b = random_day_batch(7, cfg.data.sequence_length, F, 4, k=3, seed=4)
    with torch.no_grad():
        want, got = model(b), loaded(b)
    for key in want["predictions"]:
        assert torch.equal(want["predictions"][key], got["predictions"][key])


def test_feature_count_mismatch_names_both_numbers(tmp_path: Path) -> None:
    model, cfg, _ = trained_state(tmp_path)
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, cfg, NORM)
    with pytest.raises(ShapeError, match=rf"F={F} features but the data has F={F + 3}"):
        load_model(path, num_features=F + 3)
    with pytest.raises(ShapeError, match=rf"F={F} .*model.num_features in the config has F=9"):
        load_model(path, smoke("model.num_features=9"))
    assert load_model(path, smoke(f"model.num_features={F}"))[0].num_features == F


def test_switch_mismatch_is_a_config_error(tmp_path: Path) -> None:
    model, cfg, _ = trained_state(tmp_path)
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, cfg, NORM)
    with pytest.raises(ConfigError, match="graph path .*checkpoint True, config False"):
        load_model(path, smoke("model.use_gat=false"))
    with pytest.raises(ConfigError, match="adaptive_norm: checkpoint True, config False"):
        load_model(path, smoke("model.adaptive_norm=false"))


def test_failed_write_leaves_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, cfg, _ = trained_state(tmp_path)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, cfg, NORM, extra={"epoch": 1})

    def broken_save(obj: object, f: object) -> None:
        Path(str(f)).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, cfg, NORM, extra={"epoch": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_bad_inputs_are_input_errors(tmp_path: Path) -> None:
    model, cfg, _ = trained_state(tmp_path)
    with pytest.raises(InputError, match="reserved keys \\['config'\\]"):
        save_checkpoint(tmp_path / "x.pt", model, cfg, NORM, extra={"config": {}})
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an atft checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_diagnose_head_reads_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atft.cli import main

    model, cfg, _ = trained_state(tmp_path)
    save_checkpoint(tmp_path / "best.pt", model, cfg, NORM)
    assert main(["diagnose-head", "--config", "smoke", "--checkpoint", str(tmp_path / "best.pt")]) == 0
    assert f"checkpoint {tmp_path / 'best.pt'}" in capsys.readouterr().out
    assert main(["diagnose-head", "--config", "smoke", "--checkpoint", str(tmp_path / "best.pt"),
                 "model.num_features=7"]) == 2
    assert "F=5 features but model.num_features in the config has F=7" in capsys.readouterr().err


def test_checkpoint_written_before_vsn_hidden_loads_as_the_full_width_form(tmp_path: Path) -> None:
    cfg = smoke("model.hidden_size=64", "model.vsn_hidden=0")
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, F).eval()
    path = tmp_path / "old.pt"
    save_checkpoint(path, model, cfg, NORM)
    ck = torch.load(path, weights_only=True)
    del ck["config"]["model"]["vsn_hidden"]  # as written before the key existed
    torch.save(ck, path)
    restored = load_model(path)
    assert restored.config.model.vsn_hidden == 0 and restored.model.vsn.project is None
    assert load_model(path, smoke("model.hidden_size=64")).model.vsn.feature_size == 64
    b = random_day_batch(6, cfg.data.sequence_length, F, 4, k=2, seed=3)
    with torch.no_grad():
        want, got = model(b)["predictions"], restored.model(b)["predictions"]
    for k in want:
        torch.testing.assert_close(got[k], want[k])
