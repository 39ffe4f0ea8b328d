"""The atft pytest plugin: options, session fixtures, check recording, the health report.

Loaded by the root ``conftest.py``. One option group ("atft"):

========================== ============== =====================================================
option                     env            meaning
========================== ============== =====================================================
``--atft-config PATH``     ATFT_CONFIG    YAML config (default: the packaged ``default``)
``--atft-data PATH``       ATFT_DATA      parquet file, directory or glob (default: config's
                                          ``data.path``, else the embedded synthetic panel)
``--atft-checkpoint PATH``                check a trained model instead of a fresh one
``--atft-report PATH``                    JSON health report (default ``health_report.json``)
``--require-cuda``                        ``cuda`` tests fail instead of skipping without a GPU
``--atft-allow-gat-bypass``               deliberate ablation runs only: GAT-off is not a failure
========================== ============== =====================================================

Every check records a ``CheckResult`` (figure, threshold, verdict) through the ``health``
fixture; results travel to the xdist controller as ``user_properties`` (hence also as JUnit
properties), are printed as a terminal table and written to the JSON report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atft.health.result import CheckResult, format_table

OPT_CONFIG = "--atft-config"
OPT_DATA = "--atft-data"
OPT_CHECKPOINT = "--atft-checkpoint"
OPT_REPORT = "--atft-report"
OPT_REQUIRE_CUDA = "--require-cuda"
OPT_ALLOW_BYPASS = "--atft-allow-gat-bypass"

CHECK_PROP = "atft_check"  # user_properties key carrying a CheckResult as JSON
ARTIFACT_PROP = "atft_artifact"  # user_properties key carrying plot data (history, predictions)


def _config_arg(value: str) -> str:
    from atft.config import resolve_path
    from atft.errors import ConfigError

    try:
        return str(resolve_path(value))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def _data_arg(value: str) -> str:
    from atft.data.source import resolve_files
    from atft.errors import DataError

    try:
        resolve_files(value)
    except DataError as exc:
        raise pytest.UsageError(str(exc)) from None
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("atft", "ATFT-GAT-FAN health suite")
    g.addoption(OPT_CONFIG, dest="atft_config", type=_config_arg, default=os.environ.get("ATFT_CONFIG"),
                help="YAML config to check (env ATFT_CONFIG; default: configs/default.yaml)")
    g.addoption(OPT_DATA, dest="atft_data", type=_data_arg, default=os.environ.get("ATFT_DATA"),
                help="dataset: parquet file, directory or glob (env ATFT_DATA; default: the config's "
                     "data.path, else the embedded synthetic panel)")
    g.addoption(OPT_CHECKPOINT, dest="atft_checkpoint", default=None,
                help="checkpoint to check instead of a freshly initialised model")
    g.addoption(OPT_REPORT, dest="atft_report", default="health_report.json",
                help="where to write the JSON health report (default health_report.json)")
    g.addoption(OPT_REQUIRE_CUDA, dest="require_cuda", action="store_true",
                help="cuda tests fail instead of skipping when no GPU is visible")
    g.addoption(OPT_ALLOW_BYPASS, dest="allow_gat_bypass", action="store_true",
                help="deliberate ablation runs only: a bypassed GAT does not fail the suite")


def pytest_configure(config: pytest.Config) -> None:
    _register_hypothesis_profiles()
    _share_cores_between_workers()
    config.stash[_RESULTS] = []
    config.stash[_ARTIFACTS] = []


def _share_cores_between_workers() -> None:
    """Under xdist give each worker its share of the cores as torch threads.

    Two workers each running 2 OpenMP threads on 2 cores make scatter/index kernels 100x
    slower (threads spin on barriers of a descheduled peer), so oversubscription is avoided.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _register_hypothesis_profiles() -> None:
    """``dev`` (random, a few examples) and ``ci`` (derandomized); HYPOTHESIS_PROFILE picks one."""
    from hypothesis import HealthCheck, settings

    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("dev", max_examples=15, **common)
    settings.register_profile("ci", max_examples=15, derandomize=True, print_blob=True, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


_RESULTS = pytest.StashKey[list[dict[str, Any]]]()
_ARTIFACTS = pytest.StashKey[list[dict[str, Any]]]()


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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


# ---------------------------------------------------------------- recording
@dataclass
class Health:
    """Fixture object: record check results (and plot data), assert their verdicts."""

    item: pytest.Item
    results: list[CheckResult] = field(default_factory=list)

    def record(self, result: CheckResult) -> CheckResult:
        self.results.append(result)
        d = result.to_dict()
        d["test"] = self.item.nodeid
        self.item.user_properties.append((CHECK_PROP, json.dumps(d, default=str)))
        return result

    def check(self, *results: CheckResult | list[CheckResult]) -> None:
        """Record every result, then fail with all failing messages at once."""
        flat: list[CheckResult] = []
        for r in results:
            flat.extend(r if isinstance(r, list) else [r])
        for r in flat:
            self.record(r)
        failed = [r for r in flat if not r.passed]
        if failed:
            pytest.fail("\n".join(str(r) for r in failed), pytrace=False)

    def artifact(self, kind: str, data: dict[str, Any]) -> None:
        """Plot data for ``atft report`` (training history, prediction samples)."""
        self.item.user_properties.append((ARTIFACT_PROP, json.dumps({"kind": kind, **data}, default=str)))


@pytest.fixture
def health(request: pytest.FixtureRequest) -> Health:
    return Health(request.node)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # runs on the xdist controller (and in plain runs) for every phase report
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    config = _CONFIG.get("config")
    if config is None:
        return
    for key, value in report.user_properties:
        if key == CHECK_PROP:
            d = json.loads(value)
            d["outcome"] = report.outcome
            config.stash[_RESULTS].append(d)
        elif key == ARTIFACT_PROP:
            config.stash[_ARTIFACTS].append(json.loads(value))


_CONFIG: dict[str, pytest.Config] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        return
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    from atft.io import write_json

    report = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "config": config.getoption("atft_config") or "default",
        "data": config.getoption("atft_data") or "(config data.path or embedded synthetic panel)",
        "checkpoint": config.getoption("atft_checkpoint"),
        "environment": _environment(),
        "summary": {"checks": len(results), "failed": sum(not r["passed"] for r in results)},
        "checks": results,
        "artifacts": config.stash.get(_ARTIFACTS, []),
    }
    write_json(config.getoption("atft_report"), report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _is_worker(config):
        return
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    objs = [CheckResult(r["name"], float("nan") if r["figure"] is None else r["figure"],
                        float("nan") if r["threshold"] is None else r["threshold"],
                        r["passed"], r["op"], r["message"], r["examples"]) for r in results]
    terminalreporter.section("atft health")
    terminalreporter.write_line(format_table(objs))
    terminalreporter.write_line(f"report: {config.getoption('atft_report')}")


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.cuda.is_available()
        if env["cuda"]:
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover
        pass
    return env


# ---------------------------------------------------------------- session data
@pytest.fixture(scope="session")
def atft_raw_config(pytestconfig: pytest.Config) -> Any:
    """The config as written (YAML + overrides), env flags NOT applied: what the user configured."""
    from atft.config import load

    cfg = load(pytestconfig.getoption("atft_config") or "default", apply_env=False)
    data = pytestconfig.getoption("atft_data")
    if data:
        cfg.data.path = str(data)
    return cfg


@pytest.fixture(scope="session")
def atft_config(pytestconfig: pytest.Config) -> Any:
    """The effective config (env flags applied, exactly as ``atft train`` would run)."""
    from atft.config import load

    cfg = load(pytestconfig.getoption("atft_config") or "default")
    data = pytestconfig.getoption("atft_data")
    if data:
        cfg.data.path = str(data)
    return cfg


@pytest.fixture(scope="session")
def atft_data_path(atft_config: Any) -> Path:
    """The dataset under test; the embedded default is generated once, under a file lock."""
    if atft_config.data.path:
        return Path(atft_config.data.path)
    from atft.synth.cache import ensure_default_panel

    return ensure_default_panel(atft_config)


@pytest.fixture(scope="session")
def atft_prepared(atft_config: Any, atft_data_path: Path) -> Any:
    """Panel, split, normalizer, graph builder and loaders: the training pipeline itself."""
    from atft.train.prepare import prepare

    return prepare(atft_config, str(atft_data_path))


@pytest.fixture(scope="session")
def atft_data_checks(atft_config: Any, atft_data_path: Path) -> dict[str, list[CheckResult]]:
    """Every registered dataset check over ONE pass of the dataset: check name -> its results
    (``atft.health.dataset_checks.run_checks_by_name``; a failing feature selection leaves out the
    feature checks)."""
    from atft.health.dataset_checks import run_checks_by_name

    return run_checks_by_name(str(atft_data_path), atft_config)


@pytest.fixture(scope="session")
def allow_gat_bypass(pytestconfig: pytest.Config) -> bool:
    return bool(pytestconfig.getoption("allow_gat_bypass"))


@pytest.fixture
def atft_model(atft_config: Any, atft_prepared: Any, pytestconfig: pytest.Config) -> Iterator[Any]:
    """A fresh model seeded by ``train.seed`` (or the ``--atft-checkpoint`` weights)."""
    import torch

    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    ckpt = pytestconfig.getoption("atft_checkpoint")
    if ckpt:
        from atft.train.checkpoint import load_model

        model = load_model(ckpt, atft_config, atft_prepared.num_features).model
    else:
        torch.manual_seed(atft_config.train.seed)
        model = ATFT_GAT_FAN.from_config(atft_config, atft_prepared.num_features)
    yield model
    del model
