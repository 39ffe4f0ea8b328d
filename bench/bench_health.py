"""Health suite wall time against the recovery plan's smoke procedure (a 3-epoch training run).

    nice -n 10 python bench/bench_health.py [--quick]

Measured once each (they take minutes), in subprocesses, on the same data (the embedded default
synthetic panel, generated into ``data.cache_dir`` beforehand so no contender pays for it):

* ``pytest --pyargs atft.health_suite -m smoke -p no:cacheprovider`` (serial);
* the same with ``-n 2`` (pytest-xdist, the plugin gives each worker one share of the cores);
* ``atft train --max-epochs 3`` (default config; runs and logs under a temporary directory).

The ratio train / suite is how many times sooner the suite answers what the 3-epoch run would
(does the loss have a gradient path, are the heads alive, is the GAT used, are the data clean).
``--quick``: the smoke config, only the config and dataset health tests, and no training run
(a 1-epoch smoke run alone took 50-100 s here): a check that the benchmark runs (under a
minute); its numbers are not the ones to report.

``--production``: the smoke suite (serial) at production size instead: ``configs/production.yaml``
on a synthetic 2,000-stock x 1,200-day x 82-feature panel (``atft synth``, generated once under
``$ATFT_BENCH_TMP``, kept), and the seconds per check from the JSON report (``durations``), slowest
first, with the shared resources and the check that paid for each. No training baseline.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_TMP, REPO, be_nice, gib, machine_line, md_table, python, run_measured  # noqa: E402


def production() -> None:
    """The smoke suite at production size, seconds per check (module docstring)."""
    data = BENCH_TMP / "smoke_2000x1200x82.parquet"
    if not data.exists():
        BENCH_TMP.mkdir(parents=True, exist_ok=True)
        r = run_measured([python(), "-m", "atft.cli", "synth", "--out", str(data), "--stocks", "2000", "--days", "1200",
                          "--features", "82"], cwd=REPO)
        print(f"generated {data} in {r.seconds:.0f} s")
    with tempfile.TemporaryDirectory(prefix="atft_bench_health_") as tmp:
        report = Path(tmp) / "health_report.json"
        r = run_measured([python(), "-m", "pytest", "--pyargs", "atft.health_suite", "-m", "smoke", "-p",
                          "no:cacheprovider", "-q", "--atft-config", str(REPO / "configs" / "production.yaml"),
                          "--atft-data", str(data), "--atft-report", str(report)], cwd=REPO, check=False)
        t = json.loads(report.read_text())["durations"] if report.exists() else {"items": [], "resources": [], "total_s": 0}
    print(f"suite: wall {r.seconds:.1f} s, cpu {r.cpu_seconds:.1f} s, peak RSS {gib(r.peak_rss)}; "
          f"{summary(r.stdout + r.stderr)}; items total {t['total_s']:.1f} s")
    print(md_table(["check", "seconds", "share of the items' total"],
                   [(d["check"], d["seconds"], f"{d['seconds'] / max(t['total_s'], 1e-9):.1%}") for d in t["items"]]))
    print()
    print(md_table(["shared resource", "seconds (own)", "built by"],
                   [(x["resource"], x["seconds"], x["built_by"]) for x in sorted(t["resources"], key=lambda x: -x["seconds"])]))


def summary(out: str) -> str:
    """The last pytest summary line ('N passed, M skipped in S s')."""
    lines = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return lines[-1].strip("= ") if lines else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke config for both (a run check, not the numbers)")
    p.add_argument("--production", action="store_true", help="the smoke suite at production size, seconds per check")
    args = p.parse_args()
    be_nice(10)
    print(machine_line())
    if args.production:
        production()
        return
    config = "smoke" if args.quick else "default"
    with tempfile.TemporaryDirectory(prefix="atft_bench_health_") as tmp:
        # generate the default panel first (cached by hash), so no contender pays for it
        run_measured([python(), "-c", f"from atft.config import load; from atft.synth.cache import "
                      f"ensure_default_panel; ensure_default_panel(load('{config}', apply_env=False))"], cwd=REPO)
        select = ["-k", "config or graph_env or feature_count or nan_ratio"] if args.quick else []
        suite = [python(), "-m", "pytest", "--pyargs", "atft.health_suite", "-m", "smoke", *select,
                 "-p", "no:cacheprovider", "-q", "--atft-config", config, "--atft-report", f"{tmp}/health_report.json"]
        cmds = {
            "pytest --pyargs atft.health_suite -m smoke": suite,
            "pytest --pyargs atft.health_suite -m smoke -n 2": [*suite, "-n", "2"],
        }
        if not args.quick:  # the 3-epoch baseline takes ~17 minutes here: the full run only
            cmds["atft train --max-epochs 3"] = [python(), "-m", "atft.cli", "train", "--config", config,
                                                 "--max-epochs", "3", f"train.run_dir={tmp}/runs",
                                                 f"train.log_dir={tmp}/logs", "train.progress=false"]
        res = {name: run_measured(cmd, cwd=REPO, check=False) for name, cmd in cmds.items()}
    train = res.get("atft train --max-epochs 3")
    train_s = train.seconds if train is not None else float("nan")
    rows = []
    for name, r in res.items():
        what = summary(r.stdout + r.stderr) if name.startswith("pytest") else f"exit {r.returncode}"
        rows.append((name, r.seconds, r.cpu_seconds, gib(r.peak_rss), train_s / r.seconds, what))
    print()
    print(md_table(["command", "wall s", "cpu s", "peak RSS", "3-epoch run / this", "outcome"], rows))
    for name, r in res.items():
        if r.returncode not in (0, 1):
            print(f"--- {name} exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")


if __name__ == "__main__":
    main()
