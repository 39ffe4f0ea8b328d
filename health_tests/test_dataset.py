"""Dataset health (smoke): one test per registered check, on the dataset under test.

The recovery plan's step 2 (NaN ratio of targets <= 5 %) and the data failure modes of
design.md section 6 (NaN vs null, whole missing days, constant inputs, leakage, duplicates).
All checks read one pass over the data per session (the ``atft_data_checks`` fixture); each test
records and judges its own check's results.
"""

from __future__ import annotations

import pytest

from atft.health.dataset_checks import CHECKS, FEATURE_CHECKS, feature_columns

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def dataset_lf(atft_data_path, atft_config):
    from atft.health.dataset_checks import as_lazy

    return as_lazy(str(atft_data_path), atft_config)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_dataset_check(name, dataset_lf, atft_config, atft_data_checks, health):
    if name in FEATURE_CHECKS:
        feature_columns(dataset_lf.collect_schema(), atft_config)  # a bad selection fails loudly here
    health.check(atft_data_checks[name])
