"""Loading a config: defaults <- the YAML's base chain <- the YAML <- ``key=value`` <- env flags.

YAML files hold only overrides of the defaults (``atft.config.sections``). Unknown keys and wrong
types are rejected with a message naming the key and the file (``ConfigError``). Environment flags
the users already set are documented overrides of config fields (``ENV_FLAGS``); the config is
the source of truth once ``load`` has returned.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from atft.config.sections import Config
from atft.config.validation import validate
from atft.errors import ConfigError

log = logging.getLogger("atft.config")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


ENV_FLAGS: dict[str, tuple[str, Any]] = {
    "BYPASS_GAT_COMPLETELY": ("model.use_gat", False),
    "DISABLE_GRAPH_BUILDER": ("graph.enabled", False),
    "BYPASS_ADAPTIVE_NORM": ("model.adaptive_norm", False),
    "FORCE_SINGLE_PROCESS": ("train.single_process", True),
}


def flag_is_set(value: str | None) -> bool:
    """True for the usual spellings of an enabled flag ("1", "true", "yes", "on")."""
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def _raise(exc: OmegaConfBaseException, source: str) -> None:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    msg = str(exc).splitlines()[0]
    raise ConfigError(
        f"config error in {source}: key '{key}': {msg}. "
        "Fix: remove or rename the key, or give it a value of the documented type "
        "(see atft/config/sections.py)."
    ) from None


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A config path as given, or a packaged config: ``default``, ``default.yaml`` or
    ``configs/default.yaml`` (the repository's ``configs/`` is the packaged directory, so the
    documented paths also work from another directory or an installed copy)."""
    p = Path(path)
    if p.exists():
        return p
    cands = [CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"]
    if p.parent.name == "configs":
        cands.append(CONFIG_DIR / p.name)
    for cand in cands:
        if cand.exists():
            return cand
    raise ConfigError(f"config file not found: {path}. Fix: pass an existing YAML file or one of "
                      f"{sorted(q.stem for q in CONFIG_DIR.glob('*.yaml'))}.")


BASE_KEY = "base"  # a YAML's "base: <config>" layers it on that config (a packaged name or a path)
DEFAULT_BASE = "default"  # the base of a file that names none: the embedded default (configs/default.yaml)
NO_BASE = "none"  # "base: none": layered on the code defaults of atft/config/sections.py alone
CODE_DEFAULTS = "code defaults (atft/config/sections.py)"


def _read_yaml(p: Path) -> DictConfig:
    try:
        file_cfg = OmegaConf.load(p)
    except Exception as exc:  # yaml errors are not OmegaConf exceptions
        raise ConfigError(f"cannot read config {p}: {' '.join(str(exc).split())}. Fix: make it valid YAML "
                          "(a mapping of sections, e.g. 'train: {lr: 3e-4}').") from None
    if file_cfg is None or (isinstance(file_cfg, DictConfig) and not file_cfg):
        raise ConfigError(f"config {p} is empty. Fix: write the settings that differ from its base (e.g. "
                          "'data: {path: my.parquet}'), or pass no --config to use the embedded default.")
    if not isinstance(file_cfg, DictConfig):
        kind = "a list" if isinstance(file_cfg, ListConfig) else f"a {type(file_cfg).__name__}"
        raise ConfigError(f"config {p} holds {kind}, not a mapping of sections. "
                          "Fix: write sections at the top level, e.g. 'train: {lr: 3e-4}'.")
    return file_cfg


def config_chain(path: str | os.PathLike[str]) -> list[tuple[Path, DictConfig]]:
    """The file at ``path`` and the bases it names, nearest first: ``[(file, its YAML without the
    base key), (its base, ...), ...]``. A base is a packaged name (``default``), a path relative
    to the file naming it, or ``none`` (the code defaults). A file that names no base is layered
    on ``default`` (so a YAML holding only ``data.path`` trains exactly the embedded default's
    model); ``configs/default.yaml`` names ``base: none``.

    Raises:
        ConfigError: unreadable or empty YAML, a base that does not exist, or a cycle of bases.
    """
    chain: list[tuple[Path, DictConfig]] = []
    seen: list[Path] = []
    p = resolve_path(path)
    while True:
        if p.resolve() in seen:
            names = " -> ".join(str(x) for x in [*seen, p.resolve()])
            raise ConfigError(f"config bases form a cycle: {names}. Fix: remove one '{BASE_KEY}:' line.")
        seen.append(p.resolve())
        file_cfg = _read_yaml(p)
        base = file_cfg.pop(BASE_KEY) if BASE_KEY in file_cfg else DEFAULT_BASE
        chain.append((p, file_cfg))
        if base == NO_BASE:
            return chain
        if not isinstance(base, str) or not base:
            raise ConfigError(f"config {p}: '{BASE_KEY}' must name a config (e.g. 'default'), got {base!r}.")
        rel = p.parent / base
        p = rel if rel.is_file() else resolve_path(base)


def load(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    apply_env: bool = True,
) -> Config:
    """Defaults <- the YAML's bases <- the YAML file <- ``key=value`` overrides <- env flags.

    Args:
        path: YAML file of overrides (or a packaged config name); None = defaults only. A file
            may name ``base: <config>``: it is layered on that config (``config_chain``).
        overrides: dotted ``key=value`` strings (``train.lr=3e-4``).
        env: environment to read flags from (default ``os.environ``).
        apply_env: apply ``ENV_FLAGS`` (the health suite reads the raw config with False).

    Raises:
        ConfigError: unknown key, wrong type or unreadable file, naming key and source.
    """
    cfg: DictConfig = OmegaConf.structured(Config)
    sources = [CODE_DEFAULTS]
    if path is not None:
        for p, file_cfg in reversed(config_chain(path)):  # the root base first, the named file last
            try:
                cfg = OmegaConf.merge(cfg, file_cfg)  # type: ignore[assignment]
            except OmegaConfBaseException as exc:
                _raise(exc, str(p))
            sources.append(str(p))
    if overrides:
        sources.append("overrides: " + " ".join(overrides))
        for ov in overrides:
            if "=" not in ov:
                raise ConfigError(f"override '{ov}' is not key=value. Fix: write e.g. train.lr=3e-4.")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))  # type: ignore[assignment]
        except OmegaConfBaseException as exc:
            _raise(exc, "command-line overrides")
    obj: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    if apply_env:
        flags = apply_env_flags(obj, os.environ if env is None else env)
        if flags:
            sources.append("env: " + " ".join(f"{f}=1" for f in flags))
    validate(obj)
    obj.__dict__["sources"] = sources  # not a field: equality and YAML ignore it (config_sources)
    return obj


def config_sources(cfg: Config) -> list[str]:
    """Where ``cfg`` came from, root first: the code defaults, each file of the base chain, the
    ``key=value`` overrides and the env flags that changed it (empty for a config built otherwise)."""
    return list(cfg.__dict__.get("sources", []))


def describe(cfg: Config) -> str:
    """The short block logged at the start of a run: the chain of sources and every value that
    differs from the code defaults (the full config goes to ``runs/<id>/config.yaml``)."""
    import dataclasses

    def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            out.update(flat(v, f"{prefix}{f.name}.") if dataclasses.is_dataclass(v) else {f"{prefix}{f.name}": v})
        return out

    base, now = flat(Config()), flat(cfg)
    diff = [f"{k}={now[k]!r}" for k in now if now[k] != base[k]]
    chain = " <- ".join(config_sources(cfg) or [CODE_DEFAULTS])
    lines = [f"config: {chain}", f"  {len(diff)} values differ from the code defaults:"]
    for i in range(0, len(diff), 4):
        lines.append("    " + "  ".join(diff[i:i + 4]))
    return "\n".join(lines)


def apply_env_flags(cfg: Config, env: Any) -> list[str]:
    """Apply the documented env flags; log one WARNING per flag that changes the config."""
    changed = []
    for flag, (key, value) in ENV_FLAGS.items():
        if flag_is_set(env.get(flag)):
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
            changed.append(flag)
            if flag in ("BYPASS_GAT_COMPLETELY", "DISABLE_GRAPH_BUILDER"):
                log.warning("%s=1 in the environment: the graph path (GAT) is OFF in training "
                            "and evaluation alike (%s=%s)", flag, key, value)
            else:
                log.warning("%s=1 in the environment: %s=%s", flag, key, value)
    return changed


def to_yaml(cfg: Config) -> str:
    """The effective config as YAML (written to runs/<id>/config.yaml; the log gets ``describe``)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from a plain dict (e.g. stored next to checkpoint weights)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d))
    except OmegaConfBaseException as exc:
        _raise(exc, "stored config")
    obj: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    return obj


def to_dict(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[assignment]
    return out
