"""Config loading: the documented config paths resolve, unknown keys are rejected."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from atft.config import CONFIG_DIR, load, resolve_path
from atft.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _documented_config_paths() -> set[str]:
    text = (ROOT / "README.md").read_text() + (ROOT / "Makefile").read_text()
    return set(re.findall(r"configs/[a-z_]+\.yaml", text))


def test_readme_and_makefile_name_configs_that_exist() -> None:
    paths = _documented_config_paths()
    assert {"configs/quick.yaml", "configs/safe.yaml", "configs/production.yaml"} <= paths
    for rel in sorted(paths):
        assert (ROOT / rel).is_file(), f"{rel} is named in README/Makefile but is not a file"
        load(ROOT / rel)


@pytest.mark.parametrize("name", ["quick", "quick.yaml", "configs/quick.yaml"])
def test_packaged_config_resolves_from_any_directory(name: str, tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert resolve_path(name) == CONFIG_DIR / "quick.yaml"
        assert load(name).train.max_epochs == 3
    finally:
        os.chdir(cwd)


def test_missing_config_names_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found.*'default'"):
        resolve_path(tmp_path / "nope.yaml")


def test_unknown_key_is_rejected_naming_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*learning_rate"):
        load(bad)


def test_quick_and_safe_presets_are_the_default_but_for_their_documented_keys() -> None:
    import dataclasses

    default = load("default", apply_env=False)
    allowed = {"quick": {("train", "max_epochs")},
               "safe": {("train", "single_process"), ("train", "batch_size")}}
    for name, keys in allowed.items():
        preset = load(name, apply_env=False)
        differ = {(section.name, f.name) for section in dataclasses.fields(default)
                  for f in dataclasses.fields(getattr(default, section.name))
                  if getattr(getattr(default, section.name), f.name) != getattr(getattr(preset, section.name), f.name)}
        assert differ == keys, (name, differ)


def test_presets_hold_only_what_differs_through_their_base() -> None:
    from atft.config import config_chain

    for name, keys in (("quick", {"train"}), ("safe", {"train"})):
        chain = config_chain(name)
        assert [p.name for p, _ in chain] == [f"{name}.yaml", "default.yaml"]
        assert set(chain[0][1]) == keys  # the preset's own file: only the keys it changes


def test_a_base_chain_layers_files_and_rejects_cycles_and_missing_bases(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain:\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: default\ntrain:\n  lr: 0.1\n  seed: 7\n")
    cfg = load(tmp_path / "a.yaml", apply_env=False)
    assert cfg.train.lr == 0.5 and cfg.train.seed == 7 and cfg.model.hidden_size == load("default").model.hidden_size
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: no_such_preset\n")
    with pytest.raises(ConfigError, match="config file not found: no_such_preset"):
        load(tmp_path / "e.yaml")
    (tmp_path / "f.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load(tmp_path / "f.yaml")


def test_a_yaml_with_only_data_path_is_exactly_the_default(tmp_path: Path) -> None:
    import dataclasses

    import torch

    from atft.config import config_sources, describe
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    user = tmp_path / "user.yaml"
    user.write_text("data:\n  path: /data/panel.parquet\n")
    cfg, default = load(user, apply_env=False), load("default", apply_env=False)
    assert cfg == dataclasses.replace(default, data=dataclasses.replace(default.data, path="/data/panel.parquet"))
    torch.manual_seed(0)
    a = ATFT_GAT_FAN.from_config(cfg, 12)
    torch.manual_seed(0)
    b = ATFT_GAT_FAN.from_config(default, 12)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert [s.rsplit("/", 1)[-1] for s in config_sources(cfg)] == ["sections.py)", "default.yaml", "user.yaml"]
    text = describe(cfg)
    assert "default.yaml <- " in text and "data.path='/data/panel.parquet'" in text and len(text.splitlines()) < 12


def test_an_empty_config_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml is empty\. Fix:"):
        load(empty)


def test_every_packaged_config_names_its_base() -> None:
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        text = path.read_text()
        assert any(line.startswith("base: ") for line in text.splitlines()), path.name
