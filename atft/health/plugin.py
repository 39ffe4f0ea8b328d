"""The atft pytest plugin (entry point ``pytest11: atft``): options, markers, the check items, the report.

Installed with the package, so it is active in any directory: ``pytest --pyargs atft.health_suite
-m smoke [options]`` runs the suite (``atft health smoke`` wraps it). One option group ("atft"):

================================ ============ ==================================================
option                           env          meaning
================================ ============ ==================================================
``--atft-config PATH``           ATFT_CONFIG  YAML config (default: the packaged ``default``)
``--atft-data PATH``             ATFT_DATA    parquet file, directory or glob (default: the
                                              config's ``data.path``, else the embedded panel)
``--atft-checkpoint PATH``                    check a trained atft model (weights, config and
                                              normalizer restored) instead of a fresh one
``--atft-model MODULE:CALLABLE`` ATFT_MODEL   the user's model factory ``(config, F) -> Module``
``--atft-model-input KIND``                   ``batch`` (a DayBatch) or ``dict`` (features, edges)
``--atft-train-step MODULE:CALL``             the user's step ``(model, batch, optimizer) -> loss``
``--atft-report PATH``                        JSON health report (default health_report.json)
``--require-cuda``                            ``cuda`` checks fail instead of skipping
``--atft-allow-gat-bypass``                   deliberate ablation runs only
================================ ============ ==================================================

The session's state lives in one ``HealthSession`` registered with the plugin manager (its own
hooks collect results on the xdist controller, print the table and write the report). The
checks come from ``atft.health.registry``: built-ins, the ``atft.health_checks`` entry points and
the conftest hook ``pytest_atft_register_checks(registry)``; ``pytest_generate_tests`` makes one
item per check for any test that takes ``atft_check`` (``atft.health_suite``). Every resource of
``atft.health.context`` is also a fixture ``atft_<name>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from atft.health.adapter import INPUTS
from atft.health.registry import MARKERS, Check
from atft.health.session import HealthSession

OPT_CONFIG = "--atft-config"
OPT_DATA = "--atft-data"
OPT_CHECKPOINT = "--atft-checkpoint"
OPT_MODEL = "--atft-model"
OPT_MODEL_INPUT = "--atft-model-input"
OPT_TRAIN_STEP = "--atft-train-step"
OPT_REPORT = "--atft-report"
OPT_REQUIRE_CUDA = "--require-cuda"
OPT_ALLOW_BYPASS = "--atft-allow-gat-bypass"
SESSION = pytest.StashKey[HealthSession]()
MARKER_HELP = {
    "smoke": "fast pre-training health checks (run before every training run)",
    "cuda": "needs a CUDA GPU; skipped without one unless --require-cuda",
    "slow": "multi-epoch quality gates (deselected unless -m selects them)",
}


class Hookspecs:
    @pytest.hookspec
    def pytest_atft_register_checks(self, registry: Any) -> None:  # type: ignore[empty-body]
        """Add health checks: ``registry.add(fn)`` for functions decorated with
        ``atft.health.registry.health_check`` (or a module / list of them)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(Hookspecs)


def _input_kind(value: str) -> str:
    if value not in INPUTS:
        raise pytest.UsageError(f"{OPT_MODEL_INPUT} must be one of {list(INPUTS)}, got '{value}'")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("atft", "ATFT-GAT-FAN health suite")
    g.addoption(OPT_CONFIG, dest="atft_config", default=os.environ.get("ATFT_CONFIG"),
                help="YAML config to check (env ATFT_CONFIG; default: the packaged 'default')")
    g.addoption(OPT_DATA, dest="atft_data", default=os.environ.get("ATFT_DATA"),
                help="dataset: parquet file, directory or glob (env ATFT_DATA; default: the config's "
                     "data.path, else the embedded synthetic panel)")
    g.addoption(OPT_CHECKPOINT, dest="atft_checkpoint", default=None,
                help="atft checkpoint to check (model, config and normalizer restored)")
    g.addoption(OPT_MODEL, dest="atft_model", default=os.environ.get("ATFT_MODEL"),
                help="your model: MODULE:CALLABLE, a factory (config, num_features) -> torch.nn.Module "
                     "(env ATFT_MODEL; default: atft's ATFT_GAT_FAN)")
    g.addoption(OPT_MODEL_INPUT, dest="atft_model_input", default="batch", type=_input_kind,
                help="how your model takes input: 'batch' (a DayBatch) or 'dict' ({'features', "
                     "'edge_index', 'edge_attr'})")
    g.addoption(OPT_TRAIN_STEP, dest="atft_train_step", default=None,
                help="your training step: MODULE:CALLABLE (model, batch, optimizer) -> loss "
                     "(default: atft.train.step.train_step, the one atft's training loop calls)")
    g.addoption(OPT_REPORT, dest="atft_report", default="health_report.json",
                help="where to write the JSON health report (default health_report.json)")
    g.addoption(OPT_REQUIRE_CUDA, dest="require_cuda", action="store_true",
                help="cuda checks fail instead of skipping when no GPU is visible")
    g.addoption(OPT_ALLOW_BYPASS, dest="allow_gat_bypass", action="store_true",
                help="deliberate ablation runs only: a bypassed GAT does not fail the suite")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKER_HELP.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    _register_hypothesis_profiles()
    _share_cores_between_workers()
    session = HealthSession.from_pytest(config)
    config.hook.pytest_atft_register_checks(registry=session.registry)
    config.stash[SESSION] = session
    config.pluginmanager.register(session, "atft-session")


def _share_cores_between_workers() -> None:
    """Torch threads for the suite: under xdist each worker gets its share of the usable cores (two
    workers running 2 OpenMP threads on 2 cores made scatter/index kernels 100x slower); a serial
    run takes the fastest count of a short measured probe (a busy core makes 1 thread faster)."""
    import torch

    from atft.train.threads import available_cores, probe_threads

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        torch.set_num_threads(max(1, available_cores() // workers))
    elif os.environ.get("ATFT_SUITE_THREADS"):
        torch.set_num_threads(int(os.environ["ATFT_SUITE_THREADS"]))
    else:
        torch.set_num_threads(probe_threads()[0])


_PROFILES_SET = False


def _register_hypothesis_profiles() -> None:
    """``dev`` (random, a few examples) and ``ci`` (derandomized); HYPOTHESIS_PROFILE picks one."""
    from hypothesis import HealthCheck, settings

    global _PROFILES_SET
    if _PROFILES_SET:  # set by an enclosing session already (the suite run in-process, e.g. in a property test)
        return
    _PROFILES_SET = True
    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("dev", max_examples=15, **common)
    settings.register_profile("ci", max_examples=15, derandomize=True, print_blob=True, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _marks(check: Check) -> list[Any]:
    marks = [getattr(pytest.mark, check.marker)]
    if check.marker == "cuda":
        marks.append(pytest.mark.xdist_group("cuda"))
    return marks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "atft_check" in metafunc.fixturenames:
        registry = metafunc.config.stash[SESSION].registry
        metafunc.parametrize("atft_check", [pytest.param(c, id=c.name, marks=_marks(c)) for c in registry])


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("markexpr"):  # outside this repo's addopts: slow runs only when asked
        slow = [i for i in items if "slow" in i.keywords]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [i for i in items if "slow" not in i.keywords]
    if config.getoption("require_cuda") or cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible (pass --require-cuda to make this a failure)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "cuda" in item.keywords and item.config.getoption("require_cuda") and not cuda_available():
        pytest.fail("--require-cuda was given but torch.cuda.is_available() is False: this GPU runner "
                    "has lost its GPU (driver, CUDA_VISIBLE_DEVICES or a CPU-only torch build).",
                    pytrace=False)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def atft_session(pytestconfig: pytest.Config) -> HealthSession:
    """The suite's session: its context (resources), registry and recorded results."""
    return pytestconfig.stash[SESSION]


@pytest.fixture
def health(request: pytest.FixtureRequest) -> Any:
    """Record ``CheckResult`` objects from your own tests into the table and report:
    ``health.check(result, ...)`` records them and fails with every failing message."""
    return request.config.stash[SESSION].recorder(request.node)


def _resource_fixture(name: str, shared: bool) -> Callable[..., Any]:
    def fixture(atft_session: HealthSession) -> Any:
        return atft_session.resource(name)

    fixture.__doc__ = f"The health resource '{name}' (atft.health.context)."
    return pytest.fixture(scope="session" if shared else "function", name=f"atft_{name}")(fixture)


def _define_resource_fixtures() -> None:
    from atft.health.context import SHARED, HealthContext

    for name in HealthContext.names():
        globals()[f"_fixture_{name}"] = _resource_fixture(name, name in SHARED)


_define_resource_fixtures()
__all__ = ["MARKERS", "HealthSession", "OPT_CONFIG", "OPT_DATA"]
