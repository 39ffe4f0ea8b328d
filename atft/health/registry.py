"""The registry of health checks: one decorator, discovery, and the one way a check is run.

A check is one function plus its planted fault::

    from atft.health.registry import health_check

    def zero_the_head(ctx):                         # plants the fault the check exists for
        return ctx.replace(model_spec=...)

    @health_check(area="model", marker="smoke", fault=zero_the_head)
    def head_std(model, day_batch, cfg):            # parameters name the resources it needs
        return [CheckResult.compare(...)]           # figure, threshold, verdict

``health_check`` attaches a ``Check`` to the function (no global state); a ``Registry`` collects
them: atft's built-in checks (``atft.health.checks.*``), every object of the entry-point group
``atft.health_checks`` (a decorated function, a list of them, or a module holding them), and
whatever a conftest adds in the hook ``pytest_atft_register_checks(registry)``. The suite
(``atft.health_suite``) has one pytest item per registered check, and ``tests/`` plants every
check's fault from the same registry.

``run_check`` resolves the check's resources from a ``HealthContext`` and calls it; a check that
needs atft's own model internals says "N/A" for a user's model; a broken contract (a horizon key
mismatch, a wrong shape) raised while checking is that check's FAIL row with the message; an input
error while preparing a resource is raised as ``InputProblem`` for the suite to report once.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from atft.errors import AtftError, InputError
from atft.health.context import HealthContext
from atft.health.result import CheckResult

MARKERS = ("smoke", "cuda", "slow")
ENTRY_POINT_GROUP = "atft.health_checks"
BUILTIN_MODULES = ("atft.health.checks.config", "atft.health.checks.data", "atft.health.checks.labels",
                   "atft.health.checks.model",
                   "atft.health.checks.properties", "atft.health.checks.gpu", "atft.health.checks.quality")
Fault = Callable[[HealthContext], HealthContext]


@dataclass(frozen=True)
class Check:
    """A registered check.

    Attributes:
        name: stable id (the pytest item id and the prefix of its result rows).
        fn: ``fn(**resources) -> CheckResult | list[CheckResult]``.
        area: dataset | config | model | training | properties | gpu | quality (for the table).
        marker: smoke | cuda | slow: when it runs.
        needs: the resources it takes (its parameter names; ``HealthContext.names()``).
        fault: plants the fault the check exists for (``ctx -> ctx``); the planted-fault tests
            run the check on ``fault(ctx)`` and require a FAIL.
        atft_only: needs atft's own model internals (N/A for a user's model).
        doc: the first line of the function's docstring.
    """

    name: str
    fn: Callable[..., Any]
    area: str
    marker: str
    needs: tuple[str, ...]
    fault: Fault | None
    atft_only: bool = False
    doc: str = ""


def health_check(*, area: str, marker: str = "smoke", fault: Fault | None = None, atft_only: bool = False,
                 name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as a health check (module docstring). Its parameters name its resources."""
    if marker not in MARKERS:
        raise ValueError(f"marker must be one of {MARKERS}, got {marker!r}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        needs = tuple(inspect.signature(fn).parameters)
        doc = (inspect.getdoc(fn) or "").splitlines()[0] if fn.__doc__ else ""
        fn.__atft_check__ = Check(name or fn.__name__, fn, area, marker, needs, fault, atft_only, doc)  # type: ignore[attr-defined]
        return fn

    return wrap


class InputProblem(Exception):
    """Preparing a resource failed on the user's input (data, config, model, step): one FAIL row."""

    def __init__(self, resource: str, error: InputError) -> None:
        super().__init__(str(error))
        self.resource = resource
        self.error = error


@dataclass
class Registry:
    """The checks of a session, in registration order (built-ins first)."""

    checks: dict[str, Check] = field(default_factory=dict)

    def add(self, obj: Any) -> None:
        """Add a decorated function, a ``Check``, a module holding decorated functions, or an
        iterable of those. A second check under a taken name is an error (names are item ids)."""
        for check in _checks_in(obj):
            if check.name in self.checks and self.checks[check.name].fn is not check.fn:
                raise ValueError(f"two health checks are named '{check.name}' "
                                 f"({self.checks[check.name].fn.__module__} and {check.fn.__module__}). "
                                 "Fix: pass name=... to health_check.")
            self.checks[check.name] = check

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks.values())

    def __len__(self) -> int:
        return len(self.checks)

    def get(self, name: str) -> Check:
        return self.checks[name]

    @classmethod
    def builtin(cls) -> Registry:
        reg = cls()
        for module in BUILTIN_MODULES:
            reg.add(importlib.import_module(module))
        return reg

    def add_entry_points(self) -> list[str]:
        """Checks of every installed ``atft.health_checks`` entry point; returns their names."""
        from importlib.metadata import entry_points

        loaded = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self.add(ep.load())
            loaded.append(ep.name)
        return loaded


def _checks_in(obj: Any) -> Iterable[Check]:
    if isinstance(obj, Check):
        return [obj]
    if hasattr(obj, "__atft_check__"):
        return [obj.__atft_check__]
    if isinstance(obj, ModuleType):
        return [v.__atft_check__ for v in vars(obj).values() if hasattr(v, "__atft_check__")]
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        return [c for o in obj for c in _checks_in(o)]
    raise TypeError(f"not a health check: {obj!r} (decorate it with atft.health.registry.health_check)")


def run_check(check: Check, ctx: HealthContext) -> list[CheckResult]:
    """Run one check on a context (module docstring). Raises ``InputProblem`` on an input error."""
    if check.atft_only and ctx.model_spec.foreign:
        return [CheckResult.not_applicable(check.name, f"needs atft's own model internals; the model under "
                                                       f"test is {ctx.model_spec.factory}")]
    kwargs = {}
    for name in check.needs:
        try:
            kwargs[name] = ctx.resolve(name)
        except InputError as exc:
            raise InputProblem(name, exc) from None
    try:
        out = check.fn(**kwargs)
    except InputProblem:
        raise
    except InputError as exc:  # a resource the check prepares itself (e.g. a fault's data)
        raise InputProblem(check.name, exc) from None
    except AtftError as exc:  # a broken contract (keys, shapes) is this check's failure
        return [CheckResult.failure(check.name, str(exc))]
    results = [out] if isinstance(out, CheckResult) else list(out)
    if not results:
        raise RuntimeError(f"health check '{check.name}' returned no result (a check must measure something)")
    return results
