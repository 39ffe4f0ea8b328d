"""The result object every health check returns: a measured figure, its threshold, a verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CheckResult:
    """Outcome of one health check.

    Attributes:
        name: stable identifier (``target_nan_ratio[feat_ret_1d]``).
        figure: the measured number (NaN when it could not be measured, which fails).
        threshold: the bound it is compared with.
        passed: the verdict.
        op: how figure relates to threshold when passing ("<=", ">=", "<", ">", "==").
        message: one line naming the cause (and the fix) when failing.
        examples: a few failing cases (dates, codes, columns) for the report.
        applicable: False when the check cannot run on what is checked (e.g. it needs atft's own
            model internals and a user's model is under test): verdict "N/A", never a PASS.
    """

    name: str
    figure: float
    threshold: float
    passed: bool
    op: str = "<="
    message: str = ""
    examples: list[Any] = field(default_factory=list)
    applicable: bool = True

    @classmethod
    def not_applicable(cls, name: str, reason: str) -> CheckResult:
        """A row saying why the check does not apply (verdict "N/A"; neither a pass nor a fail)."""
        return cls(name, float("nan"), float("nan"), True, "", reason, [], applicable=False)

    @classmethod
    def failure(cls, name: str, message: str, examples: list[Any] | None = None) -> CheckResult:
        """A FAIL row without a figure: the check could not measure (an input error, a broken contract)."""
        return cls(name, float("nan"), float("nan"), False, "", message, list(examples or []))

    @classmethod
    def compare(cls, name: str, figure: float, threshold: float, op: str = "<=",
                message: str = "", examples: list[Any] | None = None) -> CheckResult:
        """Build a result whose verdict is ``figure <op> threshold`` (NaN never passes)."""
        f = float(figure)
        ok = not math.isnan(f) and {
            "<=": f <= threshold, ">=": f >= threshold, "<": f < threshold,
            ">": f > threshold, "==": f == threshold,
        }[op]
        return cls(name, f, float(threshold), bool(ok), op, message if not ok else "", list(examples or []))

    @property
    def verdict(self) -> str:
        if not self.applicable:
            return "N/A"
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        d["examples"] = [str(e) for e in self.examples[:10]]
        return d

    def __str__(self) -> str:
        s = f"{self.verdict} {self.name}: {self.figure:.6g} (threshold {self.op} {self.threshold:.6g})"
        return s + (f" -- {self.message}" if self.message else "")


def format_table(results: list[CheckResult]) -> str:
    """Plain-text table: criterion, figure, threshold, verdict."""
    rows = [("criterion", "figure", "threshold", "verdict")]
    rows += [(r.name, "-" if r.figure != r.figure and not r.op else f"{r.figure:.6g}",
              f"{r.op} {r.threshold:.6g}" if r.op else "-", r.verdict) for r in results]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    for r in results:
        if r.verdict != "PASS":
            lines.append(f"{r.verdict} {r.name}: {r.message}" + (f" e.g. {r.examples[:3]}" if r.examples else ""))
    return "\n".join(lines)
