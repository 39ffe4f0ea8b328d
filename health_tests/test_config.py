"""Config and environment (smoke): GAT on, no bypass flags in env or .env, feature count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atft.health.config_checks import (
    check_feature_count,
    check_gat_enabled,
    check_graph_env_flags,
    read_dotenv,
)

pytestmark = pytest.mark.smoke


def test_gat_enabled_in_config(atft_raw_config, allow_gat_bypass, health):
    health.check(check_gat_enabled(atft_raw_config, allow_gat_bypass))


def test_no_graph_bypass_flags(allow_gat_bypass, health):
    dotenv = Path.cwd() / ".env"
    health.check(check_graph_env_flags(os.environ, read_dotenv(dotenv), source=str(dotenv),
                                       allow_bypass=allow_gat_bypass))


def test_feature_count_matches_data(atft_config, atft_prepared, health):
    health.check(check_feature_count(atft_config, atft_prepared.num_features))
