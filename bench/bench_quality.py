"""Quality on the embedded default: ATFT-GAT-FAN vs the same model with the GAT bypassed vs ridge.

    python bench/bench_quality.py [--epochs 10] [--seeds 0 1 2] [--config default] [--json OUT]
                                  [key=value ...]
    python bench/bench_quality.py --power 0 1 2                     # the oracle's own graph advantage per draw
    python bench/bench_quality.py [key=value ...] --ceiling 0 1 2   # ridge ceilings with the graph's neighbour means
    python bench/bench_quality.py [key=value ...] --ceiling 0 --split val   # the same on the validation split
    python bench/bench_quality.py --worlds sector supply-chain nonlinear regime weak --seeds S1 S2 S3 \
        --epochs E --stocks N --dates D [--contenders ...] [--json OUT]   # the family table (bench/family.py)
    python bench/bench_quality.py --quick                          # the same, small (a few minutes)

For every training seed, ATFT-GAT-FAN and the same model with the graph path bypassed
(``model.use_gat=false``) are trained side by side (one process and one torch thread each) with
the config's early stopping / best-epoch selection on the validation split; a ridge regression on
the same normalized last-day features (fit on the train dates) is the linear baseline. On the
**test** split (never used for a choice) the table gives, per horizon, each predictor's IC next
to the oracle's IC on the same (Code, Date) rows (the synthetic truth file), their ratio, and the
paired per-date t-stats of IC(GAT) - IC(bypassed) and IC(GAT) - IC(ridge). Every number is
recomputed from the prediction frames of this run; nothing is read from earlier runs.

The issue's three criteria on IC@1d, per seed: (1) IC >= 0.8 x oracle (same rows), (2) IC above
ridge, (3) bypassing the graph lowers IC with a paired t-stat >= 3.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, md_table  # noqa: E402

from atft.config import Config, load  # noqa: E402
from atft.data.loader import GraphSource  # noqa: E402
from atft.data.pipeline import Prepared  # noqa: E402
from atft.eval.inference import paired_ic_tstat  # noqa: E402
from atft.eval.metrics import DailyIC, per_date_ic  # noqa: E402
from atft.horizons import Horizons  # noqa: E402
from atft.synth.cache import ensure_default_panel, truth_path  # noqa: E402
from atft.synth.oracle import oracle_on_predictions  # noqa: E402
from atft.train.fit import fit  # noqa: E402
from atft.train.prepare import prepare  # noqa: E402

GAT, BYPASS, RIDGE = "ATFT-GAT-FAN", "GAT bypassed", "ridge (last day)"
ORACLE_FRACTION, T_MIN = 0.8, 3.0


Design = Callable[[int, np.ndarray], np.ndarray]  # (date index, stock rows [n]) -> inputs [n, F']


def ridge_predictions(prepared: Prepared, split: str, alpha: float = 10.0,
                      design: Design | None = None) -> pl.DataFrame:
    """Ridge per horizon on the last-day normalized features (fit on train dates only).

    Same rows, targets (training scale for the fit, return units in the frame) and splits as the
    model; predictions rescaled to return units like the model's. ``design`` replaces the inputs
    of a date's rows (default: their normalized features ``[n, F]``).
    """
    x, y = prepared.normalized.features, prepared.normalized.targets
    raw, valid = prepared.normalized.raw_targets, prepared.panel.valid
    h = prepared.horizons
    inputs: Design = design or (lambda d, r: x[d, r])

    def stack(idx: np.ndarray) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        rows = [(int(d), np.flatnonzero(valid[d])) for d in idx]
        return np.concatenate([inputs(d, r) for d, r in rows]), rows

    xtr, rows_tr = stack(prepared.split.train)
    ytr = np.concatenate([y[d, r] for d, r in rows_tr])
    xte, rows_te = stack(prepared.split.get(split))
    cols: dict[str, Any] = {"Code": [prepared.panel.codes[i] for _, r in rows_te for i in r],
                            "Date": [prepared.panel.dates[d] for d, r in rows_te for _ in r]}
    rte = np.concatenate([raw[d, r] for d, r in rows_te])
    scale = prepared.normalizer.target_scale
    for j, (tcol, pcol) in enumerate(zip(h.targets, h.pred_columns, strict=True)):
        ok = np.isfinite(ytr[:, j])
        a = xtr[ok].astype(np.float64)
        w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ ytr[ok, j])
        cols[tcol] = rte[:, j]
        cols[pcol] = (xte @ w) * float(scale[j])
    frame = pl.DataFrame(cols, schema_overrides={"Code": pl.String, "Date": pl.Date})
    return frame.with_columns([pl.col(t).fill_nan(None) for t in h.targets])


def daily(frame: pl.DataFrame, h: Horizons, key: str, min_stocks: int) -> DailyIC:
    """Per-date Pearson IC of one horizon of a predictions frame."""
    j = h.keys.index(key)
    d = frame["Date"].to_physical().to_numpy()
    y = frame[h.targets[j]].fill_null(float("nan")).to_numpy()
    p = frame[h.pred_columns[j]].fill_null(float("nan")).to_numpy()
    return per_date_ic(p, y, d, min_stocks=min_stocks)


def _fit_one(cfg: Config, use_gat: bool, seed: int, data_path: str, name: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_gat=use_gat),
                            train=dataclasses.replace(cfg.train, seed=seed))
    t0 = time.perf_counter()
    res = fit(c, prepare(c, data_path), run_id=f"{name.replace(' ', '_')}_seed{seed}")
    return {"run_dir": str(res.run_dir), "epochs": len(res.history), "best_epoch": res.best_epoch,
            "seconds": time.perf_counter() - t0,
            "s_per_epoch": float(np.mean([r["train/seconds"] for r in res.history]))}


def score(frames: dict[str, pl.DataFrame], truth: Path, h: Horizons, min_stocks: int) -> dict[str, Any]:
    """Per horizon: IC and IC / oracle (same rows) of each predictor, paired t-stats vs GAT."""
    out: dict[str, Any] = {}
    for key in h.keys:
        row: dict[str, Any] = {}
        for name, frame in frames.items():
            o = oracle_on_predictions(frame, truth, h, min_stocks)[key]
            row[name] = {"ic": o["model_ic"], "oracle_ic": o["oracle_ic"], "ratio": o["ratio"],
                         "n_dates": o["n_dates"]}
        base = daily(frames[GAT], h, key, min_stocks)
        for other in (BYPASS, RIDGE):
            t = paired_ic_tstat(base, daily(frames[other], h, key, min_stocks))
            row[f"vs {other}"] = {"mean_diff": t.mean_diff, "t": t.t, "n_dates": t.n_dates}
        out[key] = row
    return out


def oracle_power(cfg: Config, data_seed: int) -> dict[str, float]:
    """The planted truth's own graph advantage on the test split of panel ``data_seed``.

    Per-date IC@1d of the oracle ``mu`` and of the own-features-only ``mu_own`` on the test rows,
    and the paired t-stat of their difference: the largest t(GAT - bypassed) a model could show
    on that split (criterion 3 asks for >= 3).
    """
    c = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, synthetic=dataclasses.replace(cfg.data.synthetic, seed=data_seed)))
    path = ensure_default_panel(c)
    prep = prepare(c, str(path))
    frame = ridge_predictions(prep, "test").join(pl.read_parquet(truth_path(path)), on=["Code", "Date"])
    h = prep.horizons
    d = frame["Date"].to_physical().to_numpy()
    y = frame[h.targets[0]].fill_null(float("nan")).to_numpy()
    full = per_date_ic(frame[f"mu_{h.keys[0]}"].to_numpy(), y, d, min_stocks=c.data.min_stocks)
    own = per_date_ic(frame[f"mu_own_{h.keys[0]}"].to_numpy(), y, d, min_stocks=c.data.min_stocks)
    t = paired_ic_tstat(full, own)
    return {"oracle_ic": float(np.nanmean(full.values)), "own_only_ic": float(np.nanmean(own.values)),
            "mean_diff": t.mean_diff, "t": t.t, "n_dates": t.n_dates}


def neighbour_design(prepared: Prepared, graph: str, builder: GraphSource | None = None) -> Design:
    """Own last-day features next to their mean over a date's graph neighbours: ``[n, 2F]``.

    ``graph``: "configured" (the run's correlation graph, ``prepared.graph_builder``, or
    ``builder`` when given) or "sector" (every listed same-sector stock: the planted peer set).
    """
    x, panel = prepared.normalized.features, prepared.panel
    builder = builder if builder is not None else prepared.graph_builder

    def inputs(d: int, rows: np.ndarray) -> np.ndarray:
        xd = x[d, rows].astype(np.float64)  # [n, F]
        if graph == "sector":
            sec = panel.sector[rows]
            same = (sec[:, None] == sec[None, :]) & (sec[:, None] >= 0)
            np.fill_diagonal(same, False)
            src, dst = np.nonzero(same)
        else:
            if builder is None:
                raise SystemExit("the configured graph is off (graph.enabled or model.use_gat false): "
                                 "no neighbours to average. Fix: drop that override for --ceiling.")
            ei = builder.for_date(panel, d, rows)[0].numpy()
            src, dst = ei[0], ei[1]
        total, count = np.zeros_like(xd), np.zeros(len(rows))
        np.add.at(total, dst, xd[src])
        np.add.at(count, dst, 1.0)
        return np.concatenate([xd, total / np.maximum(count, 1.0)[:, None]], axis=1)

    return inputs


def graph_ceiling(cfg: Config, data_seed: int, split: str = "test") -> dict[str, float]:
    """What a graph lets a linear model reach on ``split`` of panel ``data_seed`` (IC@1d).

    Ridge on own features vs ridge on own features + their mean over the configured graph's
    neighbours vs + the mean over the exact same-sector peers, each as a ratio to the oracle's
    IC on the same rows, with the paired t of each graph ridge against the own-only ridge.
    Choose graph settings with ``split="val"``: the test split is for the final figures only.
    """
    c = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, synthetic=dataclasses.replace(cfg.data.synthetic, seed=data_seed)))
    path = ensure_default_panel(c)
    prep = prepare(c, str(path))
    h, ms, key = prep.horizons, c.data.min_stocks, prep.horizons.keys[0]
    frames = {"own": ridge_predictions(prep, split),
              "graph": ridge_predictions(prep, split, design=neighbour_design(prep, "configured")),
              "sector": ridge_predictions(prep, split, design=neighbour_design(prep, "sector"))}
    own = daily(frames["own"], h, key, ms)
    out: dict[str, float] = {}
    for name, frame in frames.items():
        out[f"{name} / oracle"] = oracle_on_predictions(frame, truth_path(path), h, ms)[key]["ratio"]
        if name != "own":
            out[f"t({name} - own)"] = paired_ic_tstat(daily(frame, h, key, ms), own).t
    valid = prep.panel.valid
    shares = []
    for d in prep.split.get(split):
        rows = np.flatnonzero(valid[d])
        ei = prep.graph_builder.for_date(prep.panel, int(d), rows)[0].numpy() if prep.graph_builder else None
        if ei is not None and ei.shape[1]:
            sec = prep.panel.sector[rows]
            shares.append(float(np.mean(sec[ei[0]] == sec[ei[1]])))
    out["same-sector edge share"] = float(np.mean(shares)) if shares else float("nan")
    return out


def verdicts(s: dict[str, Any], key: str) -> dict[str, bool]:
    row = s[key]
    return {f"IC >= {ORACLE_FRACTION} x oracle": row[GAT]["ratio"] >= ORACLE_FRACTION,
            "IC > ridge": row[GAT]["ic"] > row[RIDGE]["ic"],
            f"t(GAT - bypassed) >= {T_MIN:g}": row[f"vs {BYPASS}"]["t"] >= T_MIN}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="train.max_epochs (default: the config's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (train.seed)")
    ap.add_argument("--config", default="default")
    ap.add_argument("--json", default=None, help="write every measured number here")
    ap.add_argument("--power", type=int, nargs="*", default=None, metavar="DATA_SEED",
                    help="only the oracle's own graph advantage on the test split of these panel seeds")
    ap.add_argument("--ceiling", type=int, nargs="*", default=None, metavar="DATA_SEED",
                    help="only the ridge graph ceilings (own / + graph neighbours / + sector peers) per panel seed")
    ap.add_argument("--split", default="test", choices=("val", "test"),
                    help="split scored by --ceiling (choose settings on val)")
    ap.add_argument("--worlds", nargs="+", default=None,
                    help="the family table (bench/family.py): these worlds; --seeds are then panel seeds")
    ap.add_argument("--stocks", type=int, default=200, help="--worlds: stocks per panel")
    ap.add_argument("--dates", type=int, default=600, help="--worlds: business days per panel")
    ap.add_argument("--contenders", nargs="+", default=None, help="--worlds: a subset of the contenders")
    ap.add_argument("--patience", type=int, default=0,
                    help="--worlds: train.patience (early stopping on validation IC@1d; 0 = every epoch)")
    ap.add_argument("--quick", action="store_true", help="--worlds: 2 worlds, 1 seed, 100 x 320, 1 epoch")
    ap.add_argument("--tables", nargs="+", default=None, metavar="JSON",
                    help="print the family tables of saved --worlds runs (seeds pooled across files)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    if args.tables:
        from family import from_json, print_tables

        print_tables(from_json(args.tables))
        return 0
    if args.worlds is not None or args.quick:
        from family import family_main

        args.worlds = args.worlds or []
        args.epochs = args.epochs or 3
        return family_main(args)
    ov = list(args.overrides) + ([f"train.max_epochs={args.epochs}"] if args.epochs else [])
    cfg = load(args.config, ov + ["train.progress=false"], apply_env=False)
    tmp = Path(tempfile.mkdtemp(prefix="atft_quality_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # runs and checkpoints go when the bench ends
    cfg.train.run_dir, cfg.train.log_dir = str(tmp / "runs"), str(tmp / "logs")
    h = Horizons.from_config(cfg)
    data_path = Path(cfg.data.path) if cfg.data.path else ensure_default_panel(cfg)
    truth = truth_path(data_path)
    if not truth.exists():
        raise SystemExit(f"{data_path} has no synthetic truth file {truth.name}: the oracle is unknown. "
                         "Fix: run on the embedded default (data.path='') or an `atft synth` panel.")
    ms = cfg.data.min_stocks
    print(machine_line())
    if args.power is not None:
        rows = [(sd, *oracle_power(cfg, sd).values()) for sd in (args.power or [cfg.data.synthetic.seed])]
        print("oracle (planted mu) vs own-features-only oracle, IC@1d on the test split")
        print(md_table(["panel seed", "oracle IC", "own-only IC", "dIC", "t", "dates"], rows))
        return 0
    if args.ceiling is not None:
        seeds = args.ceiling or [cfg.data.synthetic.seed]
        ceil = [graph_ceiling(cfg, sd, args.split) for sd in seeds]
        print(f"ridge IC@1d / oracle on the {args.split} split; graph: lookback {cfg.graph.lookback}, top_k "
              f"{cfg.graph.top_k}, residual {cfg.graph.residual}, rank_by {cfg.graph.rank_by}")
        print(md_table(["panel seed", *ceil[0]], [(sd, *row.values()) for sd, row in zip(seeds, ceil, strict=True)]))
        return 0
    print(f"data {data_path}; config {args.config} {' '.join(ov)}; seeds {args.seeds}; "
          f"max_epochs {cfg.train.max_epochs}, early stopping on {cfg.train.early_stopping_metric}")
    t0 = time.perf_counter()
    ridge = ridge_predictions(prepare(cfg, str(data_path)), "test")
    ridge_s = time.perf_counter() - t0
    report: dict[str, Any] = {"config": args.config, "overrides": ov, "data": str(data_path),
                              "ridge_seconds": ridge_s, "seeds": {}}
    for seed in args.seeds:
        fits: dict[str, dict[str, Any]] = {}
        with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
            futures = {name: pool.submit(_fit_one, cfg, use_gat, seed, str(data_path), name)
                       for name, use_gat in ((GAT, True), (BYPASS, False))}
            for name, fut in futures.items():
                fits[name] = fut.result()
        frames = {name: pl.read_parquet(Path(f["run_dir"]) / "predictions_test.parquet")
                  for name, f in fits.items()}
        frames[RIDGE] = ridge
        s = score(frames, truth, h, ms)
        report["seeds"][seed] = {"fits": fits, "test": s, "verdicts": verdicts(s, h.keys[0])}
        print(f"\nseed {seed}: " + "; ".join(
            f"{n} {f['epochs']} epochs in {f['seconds']:.0f} s ({f['s_per_epoch']:.0f} s/epoch train), "
            f"best epoch {f['best_epoch']}" for n, f in fits.items()))
        rows = []
        for key in h.keys:
            r = s[key]
            rows.append((key, r[GAT]["ic"], r[BYPASS]["ic"], r[RIDGE]["ic"], r[GAT]["oracle_ic"],
                         r[GAT]["ratio"], r[BYPASS]["ratio"], r[RIDGE]["ratio"],
                         f"{r[f'vs {BYPASS}']['mean_diff']:+.4f} (t={r[f'vs {BYPASS}']['t']:+.2f})",
                         f"{r[f'vs {RIDGE}']['mean_diff']:+.4f} (t={r[f'vs {RIDGE}']['t']:+.2f})"))
        print(md_table(["horizon", GAT, BYPASS, RIDGE, "oracle (same rows)", "GAT / oracle",
                        "bypassed / oracle", "ridge / oracle", "dIC vs bypassed", "dIC vs ridge"], rows))
        print("criteria on IC@1d: " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}"
                                                for k, v in report["seeds"][seed]["verdicts"].items()))
    if len(args.seeds) > 1:
        k1 = h.keys[0]
        per = [report["seeds"][sd]["test"][k1] for sd in args.seeds]
        summary = []
        for label, vals in (("GAT / oracle", [p[GAT]["ratio"] for p in per]),
                            ("bypassed / oracle", [p[BYPASS]["ratio"] for p in per]),
                            ("ridge / oracle", [p[RIDGE]["ratio"] for p in per]),
                            ("t(GAT - bypassed)", [p[f"vs {BYPASS}"]["t"] for p in per]),
                            ("t(GAT - ridge)", [p[f"vs {RIDGE}"]["t"] for p in per])):
            summary.append((label, float(np.mean(vals)), float(np.std(vals, ddof=1)), min(vals), max(vals)))
        print(f"\n{k1} over {len(args.seeds)} seeds")
        print(md_table(["figure", "mean", "sd", "min", "max"], summary))
        passed = {k: sum(report["seeds"][sd]["verdicts"][k] for sd in args.seeds)
                  for k in report["seeds"][args.seeds[0]]["verdicts"]}
        print("seeds passing: " + ", ".join(f"{k}: {v}/{len(args.seeds)}" for k, v in passed.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
