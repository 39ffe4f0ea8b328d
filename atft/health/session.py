"""One health-suite session: its context, its registry, running an item, the table and the report.

``HealthSession`` is registered with pytest's plugin manager by ``atft.health.plugin``; its hook
methods run on the xdist controller (or the only process): they gather every check's results from
the items' ``user_properties`` (JUnit properties too), print the table and write the JSON report.

Input errors (a config that does not load, a dataset that is missing or breaks the contract, a
model module that does not import) are FAIL rows ``inputs[config|data|model]`` naming the problem
and the fix, reported once; the checks that needed the input are skipped, and the run exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atft.errors import InputError
from atft.health.adapter import ModelSpec
from atft.health.context import Artifacts, HealthContext
from atft.health.registry import Check, InputProblem, Registry, run_check
from atft.health.result import CheckResult, format_table

CHECK_PROP = "atft_check"  # user_properties key carrying a CheckResult as JSON
ARTIFACT_PROP = "atft_artifact"  # user_properties key carrying plot data (history, predictions)
RESOURCE_PROP = "atft_resource"  # user_properties key: a shared resource built during the item, its seconds
TOP_DURATIONS = 8  # slowest items named in the terminal summary
MODEL_RESOURCES = {"model", "model_spec", "train_step", "loss_fn"}


def input_kind(resource: str) -> str:
    """Which input a failing resource stands for: config, model or data."""
    if resource in ("cfg", "raw_cfg"):
        return "config"
    return "model" if resource in MODEL_RESOURCES else "data"


@dataclass
class Recorder:
    """Records results (and plot data) on a pytest item; ``check`` also asserts their verdicts."""

    item: pytest.Item
    results: list[CheckResult] = field(default_factory=list)

    def record(self, result: CheckResult) -> CheckResult:
        self.results.append(result)
        d = result.to_dict()
        d["test"] = self.item.nodeid
        self.item.user_properties.append((CHECK_PROP, json.dumps(d, default=str)))
        return result

    def resource(self, name: str, seconds: float) -> None:
        self.item.user_properties.append((RESOURCE_PROP, json.dumps({"resource": name, "seconds": seconds})))

    def artifact(self, kind: str, data: dict[str, Any]) -> None:
        self.item.user_properties.append((ARTIFACT_PROP, json.dumps({"kind": kind, **data}, default=str)))

    def check(self, *results: CheckResult | list[CheckResult]) -> None:
        """Record every result, then fail with all failing messages at once."""
        flat: list[CheckResult] = []
        for r in results:
            flat.extend(r if isinstance(r, list) else [r])
        for r in flat:
            self.record(r)
        failed = [r for r in flat if r.verdict == "FAIL"]
        if failed:
            pytest.fail("\n".join(str(r) for r in failed), pytrace=False)


class HealthSession:
    """The suite's state (module docstring)."""

    def __init__(self, options: dict[str, Any], registry: Registry, is_worker: bool = False) -> None:
        self.options = options
        self.registry = registry
        self.is_worker = is_worker
        self.spec = ModelSpec(factory=options.get("atft_model"), input_kind=options.get("atft_model_input") or "batch",
                              train_step=options.get("atft_train_step"), checkpoint=options.get("atft_checkpoint"))
        self._ctx: HealthContext | None = None
        self._ctx_error: InputError | None = None
        self._reported: set[tuple[str, str]] = set()
        self.results: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.durations: dict[str, float] = {}  # item node id -> seconds (setup + call + teardown)
        self.resources: list[dict[str, Any]] = []  # shared resources: which item built them, seconds

    @classmethod
    def from_pytest(cls, config: pytest.Config) -> HealthSession:
        names = ("atft_config", "atft_data", "atft_checkpoint", "atft_model", "atft_model_input",
                 "atft_train_step", "atft_report", "allow_gat_bypass")
        options = {n: config.getoption(n) for n in names}
        registry = Registry.builtin()
        registry.add_entry_points()
        return cls(options, registry, is_worker=hasattr(config, "workerinput"))

    # ------------------------------------------------------------------ the context
    @property
    def context(self) -> HealthContext:
        """The session's resources; a config that does not load raises ``InputProblem("cfg")``."""
        if self._ctx is None and self._ctx_error is None:
            try:
                self._ctx = self._build_context()
            except InputError as exc:
                self._ctx_error = exc
        if self._ctx_error is not None:
            raise InputProblem("cfg", self._ctx_error)
        assert self._ctx is not None
        return self._ctx

    def _build_context(self) -> HealthContext:
        from atft.config import load

        path = self.options.get("atft_config") or "default"
        cfg, raw = load(path), load(path, apply_env=False)
        data = self.options.get("atft_data")
        if data:
            cfg.data.path = raw.data.path = str(data)
        return HealthContext(cfg=cfg, raw_cfg=raw, model_spec=self.spec,
                             allow_gat_bypass=bool(self.options.get("allow_gat_bypass")))

    def resource(self, name: str) -> Any:
        """A resource for a fixture ``atft_<name>`` (an input error is a failed test, no traceback)."""
        try:
            return self.context.resolve(name)
        except InputProblem as p:
            pytest.fail(f"inputs[{input_kind(p.resource)}]: {p.error}", pytrace=False)
        except InputError as exc:
            pytest.fail(f"inputs[{input_kind(name)}]: {exc}", pytrace=False)

    def recorder(self, item: pytest.Item) -> Recorder:
        return Recorder(item)

    # ------------------------------------------------------------------ one item
    def run_item(self, check: Check, item: pytest.Item) -> None:
        """Run ``check`` for its pytest item: record the rows; fail, skip (N/A) or pass."""
        rec = self.recorder(item)
        artifacts = Artifacts()
        built: dict[str, float] = {}
        try:
            ctx = self.context
            built = dict(ctx.timings)
            results = run_check(check, ctx.with_artifacts(artifacts) if "artifacts" in check.needs else ctx)
        except InputProblem as p:
            kind = input_kind(p.resource)
            key = (kind, str(p.error))
            if key in self._reported:
                pytest.skip(f"not run: the {kind} input failed (row inputs[{kind}])")
            self._reported.add(key)
            rec.check(CheckResult.failure(f"inputs[{kind}]", str(p.error)))
            return
        finally:
            if self._ctx is not None:
                for name, seconds in self._ctx.timings.items():
                    if name not in built:
                        rec.resource(name, seconds)
        for a in artifacts.items:
            rec.artifact(a["kind"], {k: v for k, v in a.items() if k != "kind"})
        rec.check(results)
        if all(not r.applicable for r in results):
            pytest.skip("N/A: " + "; ".join(r.message for r in results))

    # ------------------------------------------------------------------ pytest hooks (controller)
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        o = self.options
        data = o.get("atft_data") or "(config data.path, else the embedded synthetic panel)"
        return [f"atft: config {o.get('atft_config') or 'default'}; data {data}",
                f"atft: model {self.spec.describe()}; device {_device()}"]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + float(report.duration)
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        for key, value in report.user_properties:
            if key == CHECK_PROP:
                d = json.loads(value)
                d["outcome"] = report.outcome
                self.results.append(d)
            elif key == ARTIFACT_PROP:
                self.artifacts.append(json.loads(value))
            elif key == RESOURCE_PROP:
                self.resources.append({**json.loads(value), "built_by": report.nodeid})

    def timing(self) -> dict[str, Any]:
        """Seconds per item (setup + call + teardown; an item that first needs a shared resource
        pays for building it, named in ``resources``), slowest first, and their total."""
        checked = {r.get("test") for r in self.results}  # the items that ran a check (not other tests)
        own = {k: v for k, v in self.durations.items() if k in checked}
        items = sorted(({"check": _item_name(k), "test": k, "seconds": round(v, 3)} for k, v in own.items()),
                       key=lambda d: -d["seconds"])
        return {"total_s": round(sum(own.values()), 3), "items": items,
                "resources": [{**r, "seconds": round(r["seconds"], 3), "built_by": _item_name(r["built_by"])}
                              for r in self.resources]}

    def _rows(self) -> list[tuple[CheckResult, dict[str, Any]]]:
        """The recorded results as (CheckResult, its recorded dict), one input error row once."""
        seen, rows = set(), []
        for r in self.results:
            key = (r["name"], r["message"], r["verdict"])
            if r["name"].startswith("inputs[") and key in seen:
                continue  # the same input error reported by two xdist workers
            seen.add(key)
            rows.append((CheckResult(r["name"], float("nan") if r["figure"] is None else r["figure"],
                                     float("nan") if r["threshold"] is None else r["threshold"], r["passed"],
                                     r["op"], r["message"], r["examples"], r.get("applicable", True)), r))
        return rows

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or not self.results:
            return
        from atft.io import write_json

        rows = self._rows()
        results = [r for r, _ in rows]
        o = self.options
        report = {
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "config": o.get("atft_config") or "default",
            "data": str(self._data_used()),
            "checkpoint": o.get("atft_checkpoint"),
            "model": self.spec.describe(),
            "environment": _environment(),
            "summary": {"checks": len(results), "failed": sum(r.verdict == "FAIL" for r in results),
                        "not_applicable": sum(r.verdict == "N/A" for r in results)},
            "checks": [{**r.to_dict(), "test": d.get("test"), "outcome": d.get("outcome"),
                        "duration_s": round(self.durations.get(str(d.get("test")), float("nan")), 3)}
                       for r, d in rows],
            "durations": self.timing(),
            "artifacts": self.artifacts,
        }
        write_json(o.get("atft_report") or "health_report.json", report)

    def _data_used(self) -> str:
        """The dataset the run read: the option, the config's data.path, or the embedded panel's file."""
        if self.options.get("atft_data"):
            return str(Path(self.options["atft_data"]).resolve())
        if self._ctx is not None:
            return str(self._ctx.resolve("dataset"))
        return "(not resolved: the config did not load)"

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if self.is_worker or not self.results:
            return
        terminalreporter.section("atft health")
        terminalreporter.write_line(format_table([r for r, _ in self._rows()]))
        t = self.timing()
        terminalreporter.write_line(f"seconds per check (total {t['total_s']:.1f} s; slowest first): " + ", ".join(
            f"{d['check']} {d['seconds']:.1f}" for d in t["items"][:TOP_DURATIONS]))
        if t["resources"]:
            terminalreporter.write_line("shared resources (paid by the first check needing them): " + ", ".join(
                f"{r['resource']} {r['seconds']:.1f} ({r['built_by']})"
                for r in sorted(t["resources"], key=lambda r: -r["seconds"]) if r["seconds"] >= 0.05))
        terminalreporter.write_line(f"report: {self.options.get('atft_report')}")


def _item_name(nodeid: str) -> str:
    """``.../test_health.py::test_check[mini_train]`` -> ``mini_train``."""
    return nodeid.rsplit("[", 1)[-1].rstrip("]") if nodeid.endswith("]") else nodeid


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda ({torch.cuda.get_device_name(0)})"
    except Exception:  # pragma: no cover
        pass
    return "cpu"


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count(), "device": _device()}
    try:
        import torch

        env["torch"] = torch.__version__
    except Exception:  # pragma: no cover
        pass
    return env
