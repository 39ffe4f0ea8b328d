"""Shared helpers of the benchmarks: machine line, niceness, timing, peak RSS, tables.

Every benchmark reports ratios measured side by side in the same run (absolute times on a shared
machine are noisy) and prints the machine it ran on with ``machine_line()``.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_TMP = Path(os.environ.get("ATFT_BENCH_TMP", "/tmp/atft_bench"))  # big generated data lives here


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    """Total physical memory in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine_line() -> str:
    """One line: CPU model, cores, RAM, load, library versions, thread settings, niceness."""
    import polars as pl
    import torch

    load = os.getloadavg()
    return (f"machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, {ram_gib():.1f} GiB RAM, "
            f"load avg {load[0]:.2f}/{load[1]:.2f}; python {platform.python_version()}, torch {torch.__version__} "
            f"(threads={torch.get_num_threads()}), polars {pl.__version__} "
            f"(POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', 'default')}), numpy {np.__version__}; "
            f"nice {os.nice(0)}")


def be_nice(level: int = 10) -> None:
    """Raise this process's niceness to at least ``level`` (a shared machine; never lowers it)."""
    current = os.nice(0)
    if current < level:
        os.nice(level - current)


def best_of(fns: Sequence[Callable[[], object]], repeats: int, warmup: bool = True) -> list[float]:
    """Best (minimum) seconds of each function over ``repeats`` interleaved rounds.

    The functions alternate inside every round, so load from other processes hits them alike;
    the minimum is the least-disturbed run.
    """
    if warmup:
        for fn in fns:
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


@dataclass
class ProcResult:
    """A finished subprocess: wall seconds, peak RSS (bytes, the largest of it and its children),
    CPU seconds (user + system), return code and captured output."""

    seconds: float
    peak_rss: int
    cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 check: bool = True) -> ProcResult:
    """Run ``cmd`` in a subprocess and measure its wall time, CPU time and peak RSS.

    The peak RSS comes from ``/usr/bin/time -f "%M %U %S"`` (GNU time, the max resident set of
    the command, KiB). Not from our own ``wait4``: Linux carries a forked child's pre-exec
    high-water mark (a copy of this, possibly large, process) into its ``ru_maxrss`` across exec,
    so a small command forked from a big parent would report the parent's size. GNU time forks
    the command from its own tiny process. Without GNU time, ``wait4`` is the fallback
    (an upper bound). Output is captured through temp files (no pipe deadlock).

    Raises:
        RuntimeError: the command failed and ``check`` is True (its stderr tail in the message).
    """
    import tempfile

    full_env = dict(os.environ, **(env or {}))
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("w+", suffix=".time") as tf:
        argv = [gnu_time, "-q", "-f", "%M %U %S", "-o", tf.name, *cmd] if gnu_time else list(cmd)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss, cpu = int(usage.ru_maxrss) * 1024, usage.ru_utime + usage.ru_stime
        fields = tf.read().split()
        if gnu_time and len(fields) >= 3:
            rss, cpu = int(fields[-3]) * 1024, float(fields[-2]) + float(fields[-1])
        out.seek(0)
        err.seek(0)
        res = ProcResult(seconds, rss, cpu, proc.returncode, out.read(), err.read())
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr[-2000:]}")
    return res


def self_peak_rss() -> int:
    """Peak RSS of this process so far, bytes."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): the scaling exponent of y ~ x^k."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def fmt(x: object, digits: int = 3) -> str:
    """Numbers to ``digits`` significant digits (thousands separated when large); others as str."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
        return str(x)
    v = float(x)
    if not np.isfinite(v):
        return str(v)
    if isinstance(x, (int, np.integer)) or (abs(v) >= 10**digits and v == int(v)):
        return f"{int(v):,}"
    if abs(v) >= 10**digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def gib(nbytes: float) -> str:
    """Bytes as GiB with 2 decimals (MiB below 1 GiB)."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (numbers formatted by ``fmt``), columns padded for the terminal."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (x + 2) for x in w) + "|", *map(line, cells[1:])])


def free_disk_gib(path: Path) -> float:
    """Free space at ``path`` (or its nearest existing parent) in GiB."""
    p = path
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / 2**30


def python() -> str:
    """The interpreter running the benchmarks (subprocesses use the same virtualenv)."""
    return sys.executable
