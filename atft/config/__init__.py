"""Structured configuration (``atft.config.sections``), loading (``atft.config.loading``) and the
cross-field rules (``atft.config.validation``); the names below are the package's public API."""

from atft.config.loading import (
    BASE_KEY,
    CONFIG_DIR,
    ENV_FLAGS,
    apply_env_flags,
    config_chain,
    config_sources,
    describe,
    flag_is_set,
    from_dict,
    load,
    resolve_path,
    to_dict,
    to_yaml,
)
from atft.config.sections import (
    Config,
    DataConfig,
    GraphConfig,
    GuardRule,
    GuardsConfig,
    HealthConfig,
    ModelConfig,
    SynthConfig,
    TrainConfig,
)
from atft.config.validation import validate, validate_quantiles

__all__ = ["BASE_KEY", "CONFIG_DIR", "ENV_FLAGS", "Config", "DataConfig", "GraphConfig", "GuardRule",
           "GuardsConfig", "HealthConfig", "ModelConfig", "SynthConfig", "TrainConfig", "apply_env_flags",
           "config_chain", "config_sources", "describe", "flag_is_set", "from_dict", "load", "resolve_path", "to_dict", "to_yaml",
           "validate", "validate_quantiles"]
