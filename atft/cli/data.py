"""Data commands: ``atft synth``, ``atft build-dataset``, ``atft check-data``, ``atft filter-data``.

Argument handling and printing only; the work is in ``atft.synth``, ``atft.data.prices``,
``atft.health.dataset_checks`` and ``atft.data.filter``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from atft.config import load


def cli_synth(args: argparse.Namespace) -> int:
    """``atft synth --out PATH [--world W] [--stocks N] [--days D] [--features F] [--seed S] [--config C]``."""
    from atft.synth.cache import check_panel_path, sidecar_path, truth_path, write_panel
    from atft.synth.generator import SynthParams, generate
    from atft.synth.worlds import WORLDS

    cfg = load(args.config or "default")
    check_panel_path(args.out)  # before minutes of generating: a .parquet path that can be written
    world = getattr(args, "world", "sector")
    explicit = {"stocks": args.stocks, "days": args.days, "features": args.features, "seed": args.seed}
    params = SynthParams.from_config(cfg.data.synthetic, **{**WORLDS[world].overrides,  # preset, then options
                                                            **{k: v for k, v in explicit.items() if v is not None}})
    if params.informative + params.peer_features > params.features:  # --features below the default split
        params = replace(params, informative=max(1, params.features - params.peer_features))
    if params.stocks < 2 * params.sectors:  # --stocks below the default's 2 stocks per sector
        params = replace(params, sectors=max(1, params.stocks // 2))
        print(f"--stocks {params.stocks}: {params.sectors} sectors (at least 2 stocks per sector)")
    t0 = time.perf_counter()
    result = generate(params, cfg.data.horizons, cfg.data.target_template, world=world)
    t_gen = time.perf_counter() - t0
    path = write_panel(args.out, result)
    t_all = time.perf_counter() - t0
    shape = result.meta["shape"]
    print(f"wrote {path} ({shape['rows']} rows: {shape['stocks']} stocks x {shape['days']} days x "
          f"{shape['features']} features, {path.stat().st_size / 1e6:.1f} MB), "
          f"{sidecar_path(path).name}, {truth_path(path).name}")
    print(f"generated in {t_gen:.2f} s, written in {t_all - t_gen:.2f} s (seed {params.seed}, "
          f"c = {result.meta['signal_scale_c']:.4g})")
    print(f"{'horizon':>12} {'oracle IC':>10} {'IC std':>8} {'ICIR':>7} {'no-graph IC':>12} {'graph share':>12}")
    for key, o in result.meta["oracle"].items():
        print(f"{key:>12} {o['ic']:>10.4f} {o['ic_std']:>8.4f} {o['icir']:>7.3f} "
              f"{o['no_graph_ic']:>12.4f} {o['graph_share_of_oracle']:>12.3f}")
    print(f"world {world}: {result.meta['world_about']}; ceilings on the last 15 % of dates "
          "(ratio to the oracle there): own-only oracle, linear own, linear own + sector / correlation-neighbour means")
    for key, row in result.meta["ceilings"].items():
        print(f"{key:>12} {row['oracle_ic']:>10.4f} {row['own_oracle_ratio']:>8.3f} {row['linear_own_ratio']:>8.3f} "
              f"{row['linear_observable_ratio']:>8.3f}")
    return 0


def cli_build_dataset(args: argparse.Namespace) -> int:
    """``atft build-dataset --prices FILE --out PATH [--start] [--end] [--config]``."""
    from atft.data.prices import build_dataset
    from atft.io import check_writable

    cfg = load(args.config or "default")
    check_writable(args.out, "--out")
    s = build_dataset(args.prices, args.out, start=args.start, end=args.end, cfg=cfg)
    print(f"wrote {args.out}: {s.rows} rows, {s.stocks} stocks, {s.dates} dates "
          f"({s.first_date} .. {s.last_date}), {len(s.features)} features, targets {s.targets}")
    if s.dropped_missing_close:
        print(f"dropped {s.dropped_missing_close} rows with a missing close price")
    return 0


def cli_check_data(args: argparse.Namespace) -> int:
    """``atft check-data PATH [--config C] [--json OUT] [key=value ...]``: exit 1 if any check fails."""
    from atft.health.dataset_checks import run_checks
    from atft.health.result import format_table
    from atft.io import write_json

    cfg = load(args.config or "default", list(args.overrides or []))
    if args.json:
        from atft.io import check_writable

        check_writable(args.json, "--json")
    t0 = time.perf_counter()
    results = run_checks(args.path, cfg)
    seconds = time.perf_counter() - t0
    failed = [r for r in results if not r.passed]
    print(format_table(results))
    print(f"{len(results)} checks, {len(failed)} failed, {seconds:.2f} s ({args.path})")
    if args.json:
        write_json(args.json, {"path": str(args.path), "passed": not failed, "seconds": seconds,
                               "results": [r.to_dict() for r in results]})
    return 1 if failed else 0


def cli_filter_data(args: argparse.Namespace) -> int:
    """``atft filter-data --input P --output Q --max-nan-ratio R [--config C]``."""
    from atft.data.filter import filter_dataset
    from atft.io import check_writable

    cfg = load(args.config or "default")
    check_writable(args.output, "--output")
    report = filter_dataset(args.input, args.output, args.max_nan_ratio, cfg)
    print(f"filter-data {args.input} -> {args.output} (max NaN ratio {args.max_nan_ratio})")
    for line in report.lines():
        print("  " + line)
    return 0
