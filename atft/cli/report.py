"""``atft report`` (Markdown + PNG plots of a health report) and ``atft health`` (run the suite)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cli_report(args: argparse.Namespace) -> int:
    """``atft report REPORT.json | runs/<id> [--out DIR]``."""
    from atft.health.report import read_report, render, render_run
    from atft.io import check_writable_dir

    check_writable_dir(args.out, "--out")
    if Path(args.report).is_dir():
        md = render_run(args.report, Path(args.out))
        print(f"wrote {md} (run {Path(args.report).name})")
        return 0
    report = read_report(args.report)
    md = render(report, Path(args.out))
    print(f"wrote {md} ({len(report['checks'])} checks)")
    return 0


def cli_health(args: argparse.Namespace) -> int:
    """``atft health smoke|cuda|slow [pytest args...]``: ``pytest --pyargs atft.health_suite -m MARKER``;
    the exit code is pytest's (0 all passed, 1 a check failed, 2+ usage / internal errors)."""
    import pytest

    return int(pytest.main(["--pyargs", "atft.health_suite", "-m", args.marker, *args.pytest_args]))
