"""``atft`` command line: synth | build-dataset | check-data | filter-data | train | diagnose-head | report.

``atft.cli`` owns every ``cli_<name>(args) -> int`` function and all printing: ``data``
(synth, build-dataset, check-data, filter-data), ``train``, ``diagnose``, ``report``. Heavy
modules are imported only when their command runs. Input errors (``atft.errors.InputError``)
print one line naming the problem and the fix and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from atft.errors import InputError

# command -> "module:function"
COMMANDS: dict[str, str] = {
    "synth": "atft.cli.data:cli_synth",
    "build-dataset": "atft.cli.data:cli_build_dataset",
    "check-data": "atft.cli.data:cli_check_data",
    "filter-data": "atft.cli.data:cli_filter_data",
    "train": "atft.cli.train:cli_train",
    "diagnose-head": "atft.cli.diagnose:cli_diagnose_head",
    "report": "atft.cli.report:cli_report",
    "health": "atft.cli.report:cli_health",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atft", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic panel with a known oracle IC")
    s.add_argument("--out", required=True, help="output parquet path (sidecar .json and truth parquet beside it)")
    s.add_argument("--stocks", type=int, default=None, help="number of stocks (default 300)")
    s.add_argument("--days", type=int, default=None, help="number of trading days (default 1250)")
    s.add_argument("--features", type=int, default=None, help="number of features (default 32)")
    s.add_argument("--seed", type=int, default=None, help="generator seed (default 0)")
    s.add_argument("--world", default="sector",
                   choices=("sector", "supply-chain", "nonlinear", "regime", "weak", "strong"),
                   help="market of the family (atft.synth.worlds; default sector = the embedded default)")
    s.add_argument("--config", default=None, help="config whose data.synthetic section gives the defaults")

    s = sub.add_parser("build-dataset", help="features + targets from a daily price panel")
    s.add_argument("--prices", required=True, help="price file (CSV or parquet), long or wide")
    s.add_argument("--out", required=True, help="output parquet path")
    s.add_argument("--start", default=None, help="first date kept (YYYY-MM-DD)")
    s.add_argument("--end", default=None, help="last date kept (YYYY-MM-DD)")
    s.add_argument("--config", default=None, help="config (horizons, target template)")

    s = sub.add_parser("check-data", help="dataset health checks; exit 1 if any fails")
    s.add_argument("path", help="parquet file, directory or glob")
    s.add_argument("--config", default=None, help="config (horizons, template, thresholds)")
    s.add_argument("--json", default=None, help="write the results as JSON here")
    s.add_argument("overrides", nargs="*", help="key=value config overrides")

    s = sub.add_parser("filter-data", help="drop dates / stocks / columns over the NaN thresholds")
    s.add_argument("--input", required=True, help="input parquet file, directory or glob")
    s.add_argument("--output", required=True, help="output parquet path")
    s.add_argument("--max-nan-ratio", type=float, default=0.05, help="max NaN share (default 0.05)")
    s.add_argument("--config", default=None, help="config (horizons, template)")

    s = sub.add_parser("train", help="train ATFT-GAT-FAN (no arguments: the embedded default)")
    s.add_argument("--config", default=None, help="YAML config (default: configs/default.yaml)")
    s.add_argument("--data-path", default=None, help="parquet file, directory or glob (data.path)")
    s.add_argument("--max-epochs", type=int, default=None, help="train.max_epochs")
    s.add_argument("--batch-size", type=int, default=None,
                   help="train.batch_size: stocks per step; whole days are packed up to that many")
    s.add_argument("--lr", type=float, default=None, help="train.lr (AdamW peak learning rate)")
    s.add_argument("--seed", type=int, default=None, help="train.seed")
    s.add_argument("--resume", default=None, help="run id or run directory to continue from last.pt")
    s.add_argument("--nproc", type=_positive_int, default=None,
                   help="processes on this machine, data parallel over days: this command under torchrun "
                        "(torch.distributed.run --standalone --nproc_per_node N -m atft.cli train ...)")
    s.add_argument("overrides", nargs="*", help="key=value config overrides")

    s = sub.add_parser("diagnose-head", help="per-horizon spread of the prediction heads; exit 1 if collapsed")
    s.add_argument("--config", default=None, help="YAML config (default: configs/default.yaml)")
    s.add_argument("--checkpoint", default=None, help="checkpoint to load (default: fresh model)")
    s.add_argument("--data", default=None, help="dataset for a real day batch (default: random input)")
    s.add_argument("--threshold", type=float, default=None, help="min std (default health.min_head_std)")
    s.add_argument("overrides", nargs="*", help="key=value config overrides")

    s = sub.add_parser("health", help="run the health suite: pytest --pyargs atft.health_suite -m MARKER [args]",
                       description="A thin wrapper of `pytest --pyargs atft.health_suite -m MARKER ...`: every "
                                   "further argument goes to pytest (e.g. --atft-data D, --atft-model M:F, -n 2).")
    s.add_argument("marker", choices=["smoke", "cuda", "slow"], help="which checks: smoke | cuda | slow")
    s.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments passed to pytest")

    s = sub.add_parser("report", help="Markdown + PNG plots of a health report JSON or a training run directory")
    s.add_argument("report", help="health_report.json, or runs/<run id> (loss, IC, live guards)")
    s.add_argument("--out", default="health_report", help="output directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (atft train --nproc relaunches it)
    if args.command == "health":  # everything after the marker belongs to pytest
        args.pytest_args = list(args.pytest_args or []) + extra
        extra = []
    # key=value overrides may stand anywhere among the options (argparse stops at the first option)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module, func = COMMANDS[args.command].split(":")
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        fn = getattr(importlib.import_module(module), func)
        return int(fn(args) or 0)
    except InputError as exc:
        print(f"atft {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) outside a training loop: writes were atomic, nothing is left
        print(f"atft {args.command}: interrupted; nothing half-written was left behind. Run the command again "
              "to start over.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: a short line and the path of the full traceback, never a bare traceback
        print(f"atft {args.command}: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              f". This is a bug in atft, not in your input; the full traceback is in {_save_traceback(args.command)} "
              "(please attach it to a report).", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


EXIT_CHECK_FAILED = 1  # a health check failed
EXIT_INPUT = 2  # bad input: one line naming the problem and the fix
EXIT_GUARD = 3  # a live guard stopped the training run
EXIT_INTERNAL = 70  # an internal error (EX_SOFTWARE): a bug, the traceback saved to a file
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM (128 + SIGINT)


def _positive_int(text: str) -> int:
    """An argparse ``type=``: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM as an interrupt, so that every ``finally`` (temp files, run directories) runs."""
    raise KeyboardInterrupt


def _save_traceback(command: str) -> str:
    """Write the current exception's traceback to a file in the temp directory; its path."""
    import datetime as dt
    import tempfile
    import traceback

    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    fd, path = tempfile.mkstemp(prefix=f"atft_{command}_error_{stamp}_", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"atft {command} {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path
