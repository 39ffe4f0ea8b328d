"""``atft report``: Markdown + PNG plots of a health report (``atft.health.report``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cli_report(args: argparse.Namespace) -> int:
    """``atft report REPORT.json [--out DIR]``."""
    from atft.health.report import read_report, render

    report = read_report(args.report)
    md = render(report, Path(args.out))
    print(f"wrote {md} ({len(report['checks'])} checks)")
    return 0
