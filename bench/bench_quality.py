"""Quality on the embedded default: ATFT-GAT-FAN vs the same model with the GAT bypassed vs ridge.

    python bench/bench_quality.py [--epochs 10] [--config default] [key=value ...]

Prints, per horizon, the test IC of each predictor next to the oracle IC on the same test rows
(from the synthetic truth file), the IC / oracle ratio, and the paired per-date t-stat of
IC(GAT) - IC(bypassed) and IC(GAT) - IC(ridge). Every number is recomputed from prediction
frames: nothing is read from earlier runs. The ridge baseline uses the same normalized
last-day features, the same training-scale targets and the same splits.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import torch

from atft.config import load
from atft.data.oracle import oracle_on_predictions
from atft.data.pipeline import prepare
from atft.data.synthetic import ensure_default_panel, truth_path
from atft.horizons import Horizons
from atft.train.loop import fit
from atft.train.metrics import paired_ic_tstat, per_date_ic


def ridge_predictions(prepared, split: str, alpha: float = 10.0) -> pl.DataFrame:
    """Ridge per horizon on the last-day normalized features (fit on train dates only)."""
    x, y = prepared.normalized.features, prepared.normalized.targets
    raw, valid = prepared.normalized.raw_targets, prepared.panel.valid
    h = prepared.horizons

    def stack(idx):
        rows = [(d, np.flatnonzero(valid[d])) for d in idx]
        xs = np.concatenate([x[d, r] for d, r in rows])
        return xs, rows

    xtr, rows_tr = stack(prepared.split.train)
    ytr = np.concatenate([y[d, r] for d, r in rows_tr])
    xte, rows_te = stack(prepared.split.get(split))
    cols = {"Code": [prepared.panel.codes[i] for _, r in rows_te for i in r],
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


def daily(frame: pl.DataFrame, h: Horizons, key: str, min_stocks: int):
    j = h.keys.index(key)
    d = frame["Date"].to_physical().to_numpy()
    y = frame[h.targets[j]].fill_null(float("nan")).to_numpy()
    p = frame[h.pred_columns[j]].fill_null(float("nan")).to_numpy()
    return per_date_ic(p, y, d, min_stocks=min_stocks)


def _fit_one(cfg, use_gat: bool, data_path: str, name: str) -> tuple[str, int, int, float]:
    torch.set_num_threads(1)
    c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_gat=use_gat))
    t0 = time.perf_counter()
    res = fit(c, prepare(c, data_path), run_id=name.replace(" ", "_"))
    return str(res.run_dir), len(res.history), res.best_epoch, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="train.max_epochs (default: the config's)")
    ap.add_argument("--config", default="default")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ov = list(args.overrides) + ([f"train.max_epochs={args.epochs}"] if args.epochs else [])
    cfg = load(args.config, ov + ["train.progress=false"], apply_env=False)
    tmp = Path(tempfile.mkdtemp(prefix="atft_quality_"))
    cfg.train.run_dir, cfg.train.log_dir = str(tmp / "runs"), str(tmp / "logs")
    h = Horizons.from_config(cfg)
    data_path = Path(cfg.data.path) if cfg.data.path else ensure_default_panel(cfg)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; data {data_path}")

    frames, secs = {}, {}
    runs = {"ATFT-GAT-FAN": True, "GAT bypassed": False}
    # the two fits run side by side, one process (and one torch thread) each
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        futures = {name: pool.submit(_fit_one, cfg, use_gat, str(data_path), name)
                   for name, use_gat in runs.items()}
        for name, fut in futures.items():
            run_dir, n_epochs, best_epoch, secs[name] = fut.result()
            frames[name] = pl.read_parquet(Path(run_dir) / "predictions_test.parquet")
            print(f"{name}: {n_epochs} epochs in {secs[name]:.0f} s (best epoch {best_epoch})", flush=True)
    t0 = time.perf_counter()
    frames["ridge (last day)"] = ridge_predictions(prepare(cfg, str(data_path)), "test")
    secs["ridge (last day)"] = time.perf_counter() - t0

    truth = truth_path(data_path)
    ms = cfg.data.min_stocks
    print(f"\ntest split, per-date Pearson IC averaged over dates (min_stocks={ms})")
    head = f"{'horizon':>12} {'predictor':>16} {'IC':>8} {'oracle(same rows)':>18} {'IC/oracle':>10}"
    print(head)
    for key in h.keys:
        for name, frame in frames.items():
            o = oracle_on_predictions(frame, truth, h, ms)[key] if truth.exists() else None
            ic = float(np.nanmean(daily(frame, h, key, ms).values))
            ratio = f"{ic / o['oracle_ic']:.2f}" if o else "-"
            print(f"{key:>12} {name:>16} {ic:8.4f} {o['oracle_ic'] if o else float('nan'):18.4f} {ratio:>10}")
    print("\npaired per-date delta IC (ATFT-GAT-FAN minus ...), t-stat over common dates")
    for key in h.keys:
        base = daily(frames["ATFT-GAT-FAN"], h, key, ms)
        for other in ("GAT bypassed", "ridge (last day)"):
            t = paired_ic_tstat(base, daily(frames[other], h, key, ms))
            print(f"{key:>12} vs {other:<16} mean dIC {t.mean_diff:+.4f}  t = {t.t:+.2f}  (n={t.n_dates})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
