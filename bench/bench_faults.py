"""Every registered health check on a healthy context and on its own planted fault: the figures.

    python bench/bench_faults.py [--config smoke] [--marker smoke] [--md OUT.md]

Not a timing bench: it prints, per check, the measured figure on the healthy context (the config's
embedded synthetic panel, the fresh atft model, THE training step), the figure with the check's
planted fault (``@health_check(fault=...)``), the threshold and both verdicts, so that a reader sees
how far each fault moves its figure past the threshold. ``tests/test_health_registry.py`` asserts
the verdicts; this prints the numbers behind them. The slow gates read planted run records (as in
that test); the cuda checks skip without a GPU. One torch thread; seeds fixed by the config; the
hypothesis-driven checks under the derandomized ``ci`` profile (the same figures every run).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, md_table  # noqa: E402


def fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.4g}"


def rows_for(check, ctx, run_check) -> list[tuple]:  # type: ignore[no-untyped-def]
    from atft.health.context import Artifacts

    healthy = {r.name: r for r in run_check(check, ctx.replace(artifacts=Artifacts()))}
    faulty = {r.name: r for r in run_check(check, check.fault(ctx).replace(artifacts=Artifacts()))}
    out = []
    for name in sorted(set(healthy) | set(faulty)):
        h, f = healthy.get(name), faulty.get(name)
        ref = h or f
        out.append((f"{check.name} ({check.fault.__name__})", name, fmt(h.figure) if h else "-", h.verdict if h else "-",
                    fmt(f.figure) if f else "-", f.verdict if f else "-", f"{ref.op} {fmt(ref.threshold)}",
                    (f.message[:90] if f and f.verdict == "FAIL" else "")))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--marker", default="smoke", choices=["smoke", "slow", "cuda", "all"])
    p.add_argument("--md", default=None, help="also write the table to this Markdown file")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    import os

    os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")  # the property checks derandomized, as in CI
    from atft.health.plugin import _register_hypothesis_profiles

    _register_hypothesis_profiles()
    from atft.config import load
    from atft.health.checks.quality import planted_run
    from atft.health.context import HealthContext
    from atft.health.registry import Registry, run_check
    from atft.horizons import Horizons

    root = Path(tempfile.mkdtemp(prefix="atft_faults_"))
    cfg = load(args.config, [f"data.cache_dir={root / 'cache'}"], env={})
    raw = load(args.config, [f"data.cache_dir={root / 'cache'}"], apply_env=False)
    good = planted_run([0.5, 0.45, 0.4, 0.38, 0.37], [0.5, 0.47, 0.45, 0.44, 0.43], 0.08, 0.9,
                       Horizons.from_config(cfg))
    ctx = HealthContext(cfg=cfg, raw_cfg=raw, workdir=root, environ={},
                        overrides={"fit_3ep": good, "fit_10ep": good})
    rows: list[tuple] = []
    for check in Registry.builtin():
        if args.marker != "all" and check.marker != args.marker:
            continue
        if check.marker == "cuda" and not torch.cuda.is_available():
            rows.append((f"{check.name} ({check.fault.__name__})", check.name, "-", "skipped (no GPU)", "-", "-", "-",
                         ""))
            continue
        rows.extend(rows_for(check, ctx, run_check))
    print(machine_line())
    table = md_table(["check (planted fault)", "row", "healthy figure", "verdict", "faulty figure", "verdict",
                      "threshold", "message on the fault (cut)"], rows)
    print(table)
    failed = {r[0] for r in rows if r[5] == "FAIL"}
    missed = sorted({r[0] for r in rows if r[0] not in failed and r[3] != "skipped (no GPU)"})
    print(f"\n{len(rows)} rows of {len({r[0] for r in rows})} checks; checks with no FAIL row under their own "
          f"fault: {missed or 'none'}")
    if args.md:
        Path(args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
