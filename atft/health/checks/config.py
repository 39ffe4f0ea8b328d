"""Config and environment checks (smoke): GAT on, no bypass flags in the env or ``.env``, feature count."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from atft.config import Config
from atft.health.config_checks import check_feature_count, check_gat_enabled, check_graph_env_flags
from atft.health.context import HealthContext
from atft.health.registry import health_check
from atft.health.result import CheckResult


def _gat_off_in_the_yaml(ctx: HealthContext) -> HealthContext:
    raw = ctx.raw_cfg
    return ctx.replace(raw_cfg=dataclasses.replace(raw, model=dataclasses.replace(raw.model, use_gat=False)))


@health_check(area="config", fault=_gat_off_in_the_yaml)
def config_gat_enabled(raw_cfg: Config, allow_gat_bypass: bool) -> CheckResult:
    """model.use_gat and graph.enabled are both on in the config as written."""
    return check_gat_enabled(raw_cfg, allow_gat_bypass)


def _bypass_flag_set(ctx: HealthContext) -> HealthContext:
    return ctx.replace(environ={**ctx.resolve("environ"), "BYPASS_GAT_COMPLETELY": "1"})


@health_check(area="config", fault=_bypass_flag_set)
def graph_env_flags(environ: Mapping[str, str], dotenv: tuple[str, dict[str, str]],
                    allow_gat_bypass: bool) -> list[CheckResult]:
    """BYPASS_GAT_COMPLETELY / DISABLE_GRAPH_BUILDER are set neither in the environment nor in ./.env."""
    source, parsed = dotenv
    return check_graph_env_flags(environ, parsed, source=source, allow_bypass=allow_gat_bypass)


def _feature_count_drift(ctx: HealthContext) -> HealthContext:
    cfg = ctx.cfg
    f = ctx.resolve("prepared").num_features
    return ctx.replace(cfg=dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_features=f + 7)))


@health_check(area="config", fault=_feature_count_drift)
def feature_count_matches(cfg: Config, prepared: Any, model_spec: Any) -> CheckResult:
    """model.num_features (when set), or the checkpoint's F, equals the data's feature count (failure mode 11)."""
    if cfg.model.num_features > 0:
        return check_feature_count(cfg, prepared.num_features)
    if model_spec.checkpoint:
        from atft.train.checkpoint import load_checkpoint

        stored = int(load_checkpoint(model_spec.checkpoint)["num_features"])
        with_f = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_features=stored))
        return check_feature_count(with_f, prepared.num_features)
    return CheckResult.not_applicable("feature_count_matches", "model.num_features is 0 (F is taken from the data) "
                                      "and no checkpoint is given: there is no second feature count to compare")
