"""Config and environment checks: GAT on, no bypass flags, feature count matches the data.

The recovery plan's step 1 (``grep -E "BYPASS_GAT|DISABLE_GRAPH" .env``) as code: a ``.env``
file is PARSED (``KEY=VALUE`` lines, ``export`` prefixes, quotes, comments), never executed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from atft.config import Config, flag_is_set
from atft.health.result import CheckResult

GRAPH_FLAGS = ("BYPASS_GAT_COMPLETELY", "DISABLE_GRAPH_BUILDER")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a ``.env`` file into a dict without executing anything. Missing file -> {}."""
    p = Path(path)
    if not p.is_file():
        return {}
    out: dict[str, str] = {}
    for raw in p.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        out[key] = value
    return out


def check_gat_enabled(raw_cfg: Config, allow_bypass: bool = False) -> CheckResult:
    """model.use_gat and graph.enabled are both on in the config as written."""
    on = float(raw_cfg.model.use_gat and raw_cfg.graph.enabled)
    r = CheckResult.compare("config_gat_enabled", on, 1.0, "==",
                            f"GAT is off in the config (model.use_gat={raw_cfg.model.use_gat}, "
                            f"graph.enabled={raw_cfg.graph.enabled}). Fix: set both to true "
                            "(or pass --atft-allow-gat-bypass for a deliberate ablation).")
    if allow_bypass and not r.passed:
        r.passed, r.message = True, "GAT off, allowed by --atft-allow-gat-bypass"
    return r


def check_graph_env_flags(env: Mapping[str, str], dotenv: Mapping[str, str], *,
                          source: str = ".env", allow_bypass: bool = False) -> list[CheckResult]:
    """One result per flag: set (=1/true/yes/on) in the environment or in the ``.env`` file fails."""
    out = []
    for flag in GRAPH_FLAGS:
        where = [name for name, vals in (("environment", env), (source, dotenv))
                 if flag_is_set(vals.get(flag))]
        r = CheckResult.compare(
            f"env_{flag}", float(len(where)), 0.0, "==",
            f"{flag}=1 is set in the {' and the '.join(where)}: the GAT would be bypassed. "
            f"Fix: unset it (`unset {flag}`) and delete the line from {source} "
            f"(or set {flag}=0).", examples=where)
        if allow_bypass and not r.passed:
            r.passed, r.message = True, "bypass flag set, allowed by --atft-allow-gat-bypass"
        out.append(r)
    return out


def check_feature_count(cfg: Config, data_features: int) -> CheckResult:
    """model.num_features (when set) equals the data's feature count (failure mode 11)."""
    want = cfg.model.num_features
    if want == 0:
        return CheckResult.compare("feature_count_matches", float(data_features), 1.0, ">=",
                                   "the dataset has no feature columns. Fix: check data.features / "
                                   "data.exclude and the dataset's numeric columns.")
    return CheckResult.compare(
        "feature_count_matches", float(abs(want - data_features)), 0.0, "==",
        f"config model.num_features={want} but the data has {data_features} features. Fix: set "
        f"model.num_features={data_features} (or 0 to take it from the data), or list the intended "
        "columns in data.features; never train a silently rebuilt block.",
        examples=[f"config={want}", f"data={data_features}"])
