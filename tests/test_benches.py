"""The benches still run: every script imports and parses ``--help``; the cheap ones run a tiny
case (``bench_guards.py`` broke silently once when ``fit``'s helper changed its signature)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_imports_and_parses_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_bench_guards_runs_a_tiny_case(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "bench_guards.py"), "--config", "smoke", "--steps", "4",
                           "--block", "2", f"data.cache_dir={tmp_path}", "health.guard_every=2",
                           "health.guard_graph_every=2"],
                          capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "overhead of the guards" in proc.stdout and "guards on" in proc.stdout
