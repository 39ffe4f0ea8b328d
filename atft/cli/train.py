"""``atft train``: config from flags, ``fit``, and the closing table (IC next to the oracle IC).

``--batch-size`` is ``train.batch_size``: the number of stocks per optimisation step. Whole
trading days are packed into a step until adding the next day would exceed it (a day with
more stocks than that is a step on its own), so cross-sectional losses and metrics never mix
days.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from atft.config import Config, load
from atft.data.panel import Panel
from atft.errors import InputError
from atft.horizons import Horizons

log = logging.getLogger("atft.train")


def config_from_args(args: argparse.Namespace) -> Config:
    """Config file (default ``default``) <- flags <- ``key=value`` overrides <- env flags."""
    overrides: list[str] = []
    for flag, key in (("data_path", "data.path"), ("max_epochs", "train.max_epochs"),
                      ("batch_size", "train.batch_size"), ("lr", "train.lr"), ("seed", "train.seed")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    overrides += list(getattr(args, "overrides", None) or [])
    return load(args.config or "default", overrides)


def apply_single_process(cfg: Config) -> None:
    """FORCE_SINGLE_PROCESS / train.single_process: one torch thread (training and graph building,
    set again by ``fit``) and ``POLARS_MAX_THREADS=1`` before polars is first imported by this
    command (polars reads it once, at import). The loader builds batches in the training process:
    there are no loader worker processes to cap."""
    if cfg.train.single_process:
        import torch

        os.environ.setdefault("POLARS_MAX_THREADS", "1")
        torch.set_num_threads(1)
        log.info("single process: torch threads=1, POLARS_MAX_THREADS=%s",
                 os.environ["POLARS_MAX_THREADS"])


def oracle_for(cfg: Config, *, generate: bool = True) -> dict[str, Any] | None:
    """The synthetic sidecar of the run's data, when it has one (``atft.synth.cache.read_sidecar``).

    Args:
        cfg: the run's config (``data.path``; "" = the embedded synthetic panel).
        generate: write the embedded panel into ``data.cache_dir`` when it is not there yet;
            False only looks for an existing one.
    """
    from atft.synth.cache import read_sidecar

    return read_sidecar(cfg, generate_default=generate)


def same_rows_oracle(cfg: Config, run_dir: Path, horizons: Horizons) -> dict[str, float] | None:
    """The oracle's IC on exactly the run's test rows (from the synthetic truth file), or None.

    The sidecar's oracle IC is over the whole panel; a split's own oracle differs from it by
    about sd(daily IC) / sqrt(dates), more than model variants differ, so the ratio that
    means something is against the same rows (``atft.synth.oracle.oracle_on_predictions``).
    """
    import polars as pl

    from atft.synth.cache import ensure_default_panel, truth_path
    from atft.synth.oracle import oracle_on_predictions

    data = Path(cfg.data.path) if cfg.data.path else ensure_default_panel(cfg)
    preds = run_dir / "predictions_test.parquet"
    if not data.is_file() or not truth_path(data).exists() or not preds.exists():
        return None
    same = oracle_on_predictions(pl.read_parquet(preds), truth_path(data), horizons, cfg.data.min_stocks)
    return {k: v["oracle_ic"] for k, v in same.items()}


def attach_oracle(cfg: Config, final: dict[str, Any], run_dir: Path, horizons: Horizons
                  ) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
    """Add the synthetic oracle to a finished run's ``metrics.json`` (training never reads it).

    ``final["oracle"]`` gets the sidecar's whole-panel ``oracle_ic`` / ``no_graph_ic`` and the
    oracle IC on the run's own test rows (``test_rows_oracle_ic``); nothing for data without a
    sidecar or a sidecar of another panel shape. Returns (sidecar, same-rows oracle IC).
    """
    from atft.io import write_json

    meta = oracle_for(cfg)
    if not meta or "oracle_ic" not in meta:
        return None, None
    same = same_rows_oracle(cfg, run_dir, horizons)
    final["oracle"] = {k: meta[k] for k in ("oracle_ic", "no_graph_ic") if k in meta}
    if same is not None:
        final["oracle"]["test_rows_oracle_ic"] = same
    write_json(run_dir / "metrics.json", final)
    return meta, same


def summary_table(final: dict[str, Any], horizons: Horizons, oracle: dict[str, Any] | None,
                  same_rows: dict[str, float] | None = None) -> str:
    """Per horizon: test IC [95% CI], RankIC, Sharpe, yhat_std, and the oracle IC when known
    (over the whole panel from the sidecar, and on the same test rows from the truth file)."""
    rows = [("horizon", "IC(test)", "95% CI", "RankIC", "Sharpe", "yhat_std", "oracle IC", "IC/oracle",
             "oracle(test rows)", "IC/oracle(test rows)")]
    oic = (oracle or {}).get("oracle_ic", {})
    for key in horizons.keys:
        m = final["test"][key]
        o, s = oic.get(key), (same_rows or {}).get(key)
        lo, hi = m["ic_ci95"]
        rows.append((key, f"{m['ic']:.4f}", f"[{lo:.4f}, {hi:.4f}]", f"{m['rank_ic']:.4f}",
                     f"{m['sharpe']:.3f}", f"{m['yhat_std']:.5f}",
                     "-" if o is None else f"{o:.4f}",
                     "-" if not o else f"{m['ic'] / o:.2f}",
                     "-" if s is None else f"{s:.4f}",
                     "-" if not s else f"{m['ic'] / s:.2f}"))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w[i]) for i, c in enumerate(r)) for r in rows)


def check_inputs(cfg: Config) -> Panel:
    """Before any heavy import (torch, torch-geometric): the run and log directories can be
    written, and the dataset is there, one schema, and loads and splits (columns, dtypes,
    duplicates, infinite values, enough dates and stocks: ``atft.data.panel.load_panel`` and
    ``atft.data.splits.split_panel``). Returns the panel, which the run then uses.
    """
    from atft.data.panel import load_panel
    from atft.data.source import check_one_schema, resolve_files
    from atft.data.splits import split_panel
    from atft.io import check_writable_dir
    from atft.synth.cache import resolve_data_path

    check_writable_dir(cfg.train.run_dir, "train.run_dir")
    check_writable_dir(cfg.train.log_dir, "train.log_dir")
    path = resolve_data_path(cfg)
    check_one_schema(resolve_files(path))
    panel = load_panel(cfg, path)
    split_panel(cfg, panel.valid)
    return panel


def without_nproc(argv: list[str]) -> list[str]:
    """The command line without ``--nproc N`` / ``--nproc=N`` (what each process of a launch runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(args: argparse.Namespace) -> int:
    """``atft train --nproc N``: this very command in N processes under ``torchrun``
    (``torch.distributed.run --standalone``: one machine, a free port), each running
    ``python -m atft.cli train ...`` without ``--nproc``. Returns the processes' exit code (3 a
    guard, 130 an interrupt: the same on every rank; else the first failure's). A Ctrl-C or SIGTERM
    of this process reaches the ranks through torchrun (which SIGKILLs them 30 s later): they agree
    to stop at the next step boundary and rank 0 saves a resumable ``last.pt``; exit 130."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    argv = ["--standalone", f"--nproc_per_node={args.nproc}", "-m", "atft.cli", *without_nproc(args.argv)]
    log.info("atft train --nproc %d: torchrun %s", args.nproc, " ".join(argv))
    try:
        torchrun(argv)
    except ChildFailedError as exc:
        codes = [f.exitcode for _, f in sorted(exc.failures.items())]
        return next((c for c in codes if c in (EXIT_GUARD, EXIT_INTERRUPTED)), codes[0] if codes else 1)
    except SignalException:  # Ctrl-C / SIGTERM: torchrun passed it on; the ranks stopped at a step boundary
        return EXIT_INTERRUPTED
    return 0


EXIT_GUARD, EXIT_INTERRUPTED = 3, 130


def cli_train(args: argparse.Namespace) -> int:
    """``atft train``: fit, then the closing table with the oracle when the data has one; exit 3 when
    a live guard stopped the run, 130 when interrupted (resumable from last.pt).

    ``--nproc N`` (N > 1) relaunches the command under ``torchrun`` (``launch``) once the inputs are
    checked; under ``torchrun`` every process runs this function, rank 0 prints and writes, the
    others log warnings only (``atft.train.distributed``).
    """
    rank = int(os.environ.get("RANK", "0"))
    nproc = getattr(args, "nproc", None) or 1
    if nproc > 1 and "WORLD_SIZE" in os.environ:
        raise InputError("--nproc under torchrun: the processes are already launched. Fix: drop --nproc "
                         "(torchrun --nproc_per_node sets the number).")
    if rank > 0:  # one voice: rank 0 logs the run
        logging.getLogger("atft").setLevel(logging.WARNING)

    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.exists():  # a run id under train.run_dir (as the flags and overrides set it)
            run_dir = Path(config_from_args(args).train.run_dir) / args.resume
        cfg_path = run_dir / "config.yaml"
        args.config = str(cfg_path) if cfg_path.exists() else args.config
        cfg = config_from_args(args)
        resume: Path | None = run_dir
    else:
        cfg = config_from_args(args)
        resume = None
    panel = check_inputs(cfg)
    if nproc > 1:
        return launch(args)
    from atft.train.fit import fit

    apply_single_process(cfg)
    from atft.train.guards import GuardStop
    from atft.train.interrupt import RunInterrupted, StopRequest

    try:
        with StopRequest() as stop:
            result = fit(cfg, resume=resume, stop=stop, panel=panel)
    except GuardStop as guard:  # a live guard ended the run: exit 3 (1 = a check failed, 2 = bad input)
        if rank > 0:
            return EXIT_GUARD
        print(f"atft train: stopped by a health guard: {guard.diagnosis}", file=sys.stderr)
        print("the run's last.pt and health.json are kept; plot the guards with: atft report runs/<run id>",
              file=sys.stderr)
        return EXIT_GUARD
    except RunInterrupted as interrupted:
        if rank == 0:
            print(f"atft train: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if rank > 0:
        return 0
    horizons = Horizons.from_config(cfg)
    oracle, same = attach_oracle(cfg, result.final, result.run_dir, horizons)
    print(f"run: {result.run_dir}  best epoch {result.best_epoch} "
          f"({cfg.train.early_stopping_metric}={result.best_metric:.4f})")
    print(summary_table(result.final, horizons, oracle, same))
    return 0
