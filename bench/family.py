"""Quality across the family of synthetic markets (``bench_quality.py --worlds ...``; issue 16).

Per world and panel seed: generate the panel (``atft.synth``, world preset + ``--stocks`` /
``--dates``), train the atft variants one after another (one process, one torch thread), fit the
peers, and score every contender on the same test rows: IC@1d / IC@5d as a ratio to the oracle on
those rows (``oracle_on_predictions``), paired per-date t of atft against each peer per seed and
pooled over the seeds (the per-date differences of all seeds in one sample; the panels are
independent draws). Choices are made on the validation split only (LightGBM's number of rounds);
the test split is read once, for the table.

Contenders (``CONTENDERS``): atft (the gated default); atft with the graph path bypassed
(``model.use_gat=false``); without ``graph_skip``; without ``linear_skip``; without FAN/SAN; without
the sector peers of the graph (``graph.sector_k=0``); the production blocks at
small size (``configs/production.yaml`` with width 16, T=5, fp32); ridge on own last-day features;
ridge on own + neighbour means; LightGBM on own + neighbour means. "Neighbour means" = the mean of
the normalized last-day features over the date's correlation-graph neighbours (the configured
graph without sector peers, built from returns before the date) and over the date's listed
same-sector stocks: ``[n, 3F]``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from bench_quality import (  # bench/ is on sys.path
    Design,
    daily,
    neighbour_design,
    ridge_predictions,
)
from common import machine_line, md_table

from atft.config import Config, GraphConfig, load
from atft.data.pipeline import Prepared
from atft.eval.inference import paired_ic_tstat
from atft.eval.metrics import DailyIC
from atft.graph.builder import GraphBuilder
from atft.horizons import Horizons
from atft.synth.cache import truth_path, write_panel
from atft.synth.generator import SynthParams, generate
from atft.synth.oracle import oracle_on_predictions
from atft.synth.worlds import WORLDS
from atft.train.fit import fit
from atft.train.prepare import prepare

ATFT = "atft"
# name -> (config, overrides); fitted one after another
ATFT_VARIANTS: dict[str, tuple[str, list[str]]] = {
    ATFT: ("default", []),
    "atft graph bypassed": ("default", ["model.use_gat=false"]),
    "atft no graph_skip": ("default", ["model.graph_skip=false"]),
    "atft no linear_skip": ("default", ["model.linear_skip=false"]),
    "atft no FAN/SAN": ("default", ["model.adaptive_norm=false"]),
    "atft no sector peers": ("default", ["graph.sector_k=0"]),
    "atft production blocks (small)": ("production", ["model.num_features=0", "model.hidden_size=16",
                                                      "data.sequence_length=5", "train.bf16=false"]),
}
PEERS = ("ridge own", "ridge own+nbr", "lgbm own+nbr")
# fixed a priori (not tuned); the number of rounds is chosen on the validation split (early stopping)
LGBM_PARAMS: dict[str, Any] = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15,
                               "min_data_in_leaf": 200, "feature_fraction": 0.8, "bagging_fraction": 0.8,
                               "bagging_freq": 1, "lambda_l2": 10.0, "num_threads": 1, "seed": 0,
                               "deterministic": True, "verbose": -1}
LGBM_ROUNDS, LGBM_PATIENCE = 1000, 50
KEYS = ("horizon_1d", "horizon_5d")


def own_and_neighbour_design(prepared: Prepared, graph_cfg: GraphConfig) -> Design:
    """Own features, correlation-neighbour mean, same-sector mean of a date's rows: ``[n, 3F]``.

    The correlation neighbours are ``graph_cfg``'s without sector peers (``sector_k=0``): the
    same-sector mean is an input of its own, so the peers' design does not move with
    ``graph.sector_k`` (the benchmark stays fixed while atft's graph changes). Uses only the
    date's features and the graph of returns before the date (``GraphBuilder``):
    ``tests/test_bench_family.py`` checks that changing later dates changes nothing.
    """
    correlation = GraphBuilder.from_config(replace(graph_cfg, sector_k=0))
    graph = neighbour_design(prepared, "configured", builder=correlation)
    sector = neighbour_design(prepared, "sector")
    nf = prepared.normalized.features.shape[2]
    return lambda d, rows: np.concatenate([graph(d, rows), sector(d, rows)[:, nf:]], axis=1)


def _stack(prepared: Prepared, idx: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray,
                                                                          list[tuple[int, np.ndarray]]]:
    """Inputs, training-scale targets and the (date, rows) of a split's valid rows."""
    valid, y = prepared.panel.valid, prepared.normalized.targets
    rows = [(int(d), np.flatnonzero(valid[d])) for d in idx]
    return (np.concatenate([design(d, r) for d, r in rows]), np.concatenate([y[d, r] for d, r in rows]), rows)


def lgbm_predictions(prepared: Prepared, split: str, design: Design) -> tuple[pl.DataFrame, dict[str, int]]:
    """LightGBM per horizon on ``design`` (train dates), rounds by early stopping on validation.

    Returns the predictions frame (same layout as ``ridge_predictions``) and the rounds per horizon.
    """
    import lightgbm as lgb

    xtr, ytr, _ = _stack(prepared, prepared.split.train, design)
    xva, yva, _ = _stack(prepared, prepared.split.val, design)
    xte, _, rows_te = _stack(prepared, prepared.split.get(split), design)
    h, raw, scale = prepared.horizons, prepared.normalized.raw_targets, prepared.normalizer.target_scale
    cols: dict[str, Any] = {"Code": [prepared.panel.codes[i] for _, r in rows_te for i in r],
                            "Date": [prepared.panel.dates[d] for d, r in rows_te for _ in r]}
    rte = np.concatenate([raw[d, r] for d, r in rows_te])
    rounds: dict[str, int] = {}
    for j, (key, tcol, pcol) in enumerate(zip(h.keys, h.targets, h.pred_columns, strict=True)):
        ok, okv = np.isfinite(ytr[:, j]), np.isfinite(yva[:, j])
        train = lgb.Dataset(xtr[ok], ytr[ok, j])
        val = lgb.Dataset(xva[okv], yva[okv, j], reference=train)
        booster = lgb.train(LGBM_PARAMS, train, LGBM_ROUNDS, valid_sets=[val],
                            callbacks=[lgb.early_stopping(LGBM_PATIENCE, verbose=False)])
        rounds[key] = int(booster.best_iteration)
        cols[tcol] = rte[:, j]
        cols[pcol] = booster.predict(xte, num_iteration=booster.best_iteration) * float(scale[j])
    frame = pl.DataFrame(cols, schema_overrides={"Code": pl.String, "Date": pl.Date})
    return frame.with_columns([pl.col(t).fill_nan(None) for t in h.targets]), rounds


def world_panel(world: str, seed: int, stocks: int, days: int, out_dir: Path, base: Config) -> Path:
    """Generate and write the panel of ``world`` at ``seed`` (preset, then the sizes)."""
    over = {**WORLDS[world].overrides, "stocks": stocks, "days": days, "seed": seed}
    params = SynthParams.from_config(base.data.synthetic, **over)
    if params.stocks < 2 * params.sectors:
        params = replace(params, sectors=max(1, params.stocks // 2))
    path = out_dir / f"{world}_s{seed}_{stocks}x{days}.parquet"
    write_panel(path, generate(params, base.data.horizons, base.data.target_template, world=world))
    return path


def batch_for(stocks: int) -> int:
    """``train.batch_size`` that packs as many days per step as the default's 1,024 at 300 stocks
    (~3.4 days): a smaller panel otherwise gets proportionally fewer steps per epoch."""
    return max(64, int(round(1024 * stocks / 300)))


def fit_variant(config: str, overrides: list[str], data: Path, run_root: Path, name: str,
                epochs: int, batch: int) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Train one atft variant on ``data`` (1 torch thread); its test predictions and run facts."""
    cfg = load(config, [*overrides, f"data.path={data}", f"train.max_epochs={epochs}", "train.num_threads=1",
                        "train.progress=false", "train.seed=0", f"train.batch_size={batch}"], apply_env=False)
    cfg.train.run_dir, cfg.train.log_dir = str(run_root / "runs"), str(run_root / "logs")
    t0 = time.perf_counter()
    prep = prepare(cfg, str(data))
    res = fit(cfg, prep, run_id=f"{name.replace(' ', '_').replace('/', '-')}_{data.stem}")
    best = res.history[res.best_epoch]
    facts: dict[str, Any] = {"best_epoch": res.best_epoch, "epochs": len(res.history),
                             "seconds": time.perf_counter() - t0,
                             "val_ic": {k: best.get(f"val/ic_{k.removeprefix('horizon_')}") for k in KEYS},
                             "val_ic_1d_curve": [r.get("val/ic_1d") for r in res.history]}
    if cfg.model.adaptive_norm:
        facts["adaptive_norm"] = adaptive_norm_effect(Path(res.run_dir) / "checkpoints" / "best.pt", prep)
    return pl.read_parquet(Path(res.run_dir) / "predictions_test.parquet"), facts


def adaptive_norm_effect(checkpoint: Path, prepared: Prepared) -> dict[str, float]:
    """What the trained FAN/SAN branch does on the validation split (the best epoch's weights).

    ``branch / sequence``: RMS of ``norm_scale * SAN(FAN(h))`` over the RMS of the VSN sequence
    ``h`` it is added to; ``output change / spread``: mean |point(1d) with the branch - without|
    over the std of point(1d) over the batch's rows (a batch = a few whole days), averaged over the
    batches: how far the branch moves the forecast in units of the forecast's own spread; ``|norm_scale|``: mean absolute gate.
    """
    import torch

    from atft.train.checkpoint import load_model

    model = load_model(checkpoint).model
    if model.fan is None or model.san is None or model.norm_scale is None:
        return {}
    ratios: list[float] = []
    changes: list[float] = []
    key = prepared.horizons.keys[0]
    with torch.no_grad():
        for batch in prepared.loader("val", shuffle=False):
            with_branch = model(batch)["point"][key]
            scale = model.norm_scale.detach().clone()
            model.norm_scale.zero_()
            without = model(batch)["point"][key]
            model.norm_scale.copy_(scale)
            spread = float(with_branch.std()) if with_branch.numel() > 1 else float("nan")
            changes.append(float((with_branch - without).abs().mean()) / max(spread, 1e-12))
            sequence, _ = model.vsn(batch.features)  # [N, T, H]
            branch = model.norm_scale * model.san(model.fan(sequence))
            ratios.append(float(branch.pow(2).mean().sqrt() / sequence.pow(2).mean().sqrt().clamp_min(1e-12)))
    return {"branch / sequence": float(np.mean(ratios)), "output change / spread": float(np.mean(changes)),
            "|norm_scale|": float(model.norm_scale.detach().abs().mean())}


def run_panel(world: str, seed: int, args: Any, out_dir: Path,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Every contender on one panel: per contender and key the IC, oracle IC, ratio, daily IC."""
    extra = list(getattr(args, "overrides", None) or [])  # e.g. graph.sector_k=8: every contender's config
    base = load("default", extra, apply_env=False)
    data = world_panel(world, seed, args.stocks, args.dates, out_dir, base)
    frames: dict[str, pl.DataFrame] = {}
    facts: dict[str, Any] = {}
    for name in args.contenders:
        if name in ATFT_VARIANTS:
            config, ov = ATFT_VARIANTS[name]
            frames[name], facts[name] = fit_variant(config, [*extra, *ov, f"train.patience={args.patience}"], data,
                                                    out_dir, name, args.epochs, batch_for(args.stocks))
            log(f"  {world} seed {seed}: {name} best epoch {facts[name]['best_epoch']} "
                f"({facts[name]['seconds']:.0f} s)")
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, path=str(data)))
    prep = prepare(cfg, str(data))
    design = own_and_neighbour_design(prep, cfg.graph)
    t0 = time.perf_counter()
    if "ridge own" in args.contenders:
        frames["ridge own"] = ridge_predictions(prep, "test")
    if "ridge own+nbr" in args.contenders:
        frames["ridge own+nbr"] = ridge_predictions(prep, "test", design=design)
    if "lgbm own+nbr" in args.contenders:
        frames["lgbm own+nbr"], facts["lgbm rounds"] = lgbm_predictions(prep, "test", design)
    facts["peers seconds"] = time.perf_counter() - t0
    h, ms = prep.horizons, cfg.data.min_stocks
    out: dict[str, Any] = {"facts": facts, "scores": {}, "daily": {}}
    for name, frame in frames.items():
        o = oracle_on_predictions(frame, truth_path(data), h, ms)
        out["scores"][name] = {k: {"ic": o[k]["model_ic"], "oracle_ic": o[k]["oracle_ic"], "ratio": o[k]["ratio"]}
                               for k in KEYS if k in o}
        out["daily"][name] = {k: daily(frame, h, k, ms) for k in KEYS if k in h.keys}
    return out


def pooled_t(pairs: list[tuple[DailyIC, DailyIC]]) -> tuple[float, float, int]:
    """Paired t of a - b over the per-date differences of all pairs together (aligned per pair)."""
    a_all, b_all = [], []
    for a, b in pairs:
        _, ia, ib = np.intersect1d(a.dates, b.dates, assume_unique=True, return_indices=True)
        a_all.append(a.values[ia])
        b_all.append(b.values[ib])
    t = paired_ic_tstat(np.concatenate(a_all), np.concatenate(b_all))
    return t.t, t.mean_diff, t.n_dates


def summarize(results: dict[str, dict[int, dict[str, Any]]], contenders: list[str],
              horizons: Horizons | None = None) -> list[tuple[Any, ...]]:
    """Rows: world, contender, mean ratio @1d / @5d over seeds (per-seed values), pooled t vs atft @1d / @5d."""
    rows: list[tuple[Any, ...]] = []
    for world, per_seed in results.items():
        for name in contenders:
            seeds = sorted(s for s, r in per_seed.items() if name in r["scores"] and ATFT in r["scores"])
            if not seeds:
                continue
            cells: list[Any] = [world, f"{name} [{len(seeds)}]"]
            for key in KEYS:
                vals = [per_seed[s]["scores"][name][key]["ratio"] for s in seeds]
                cells.append(f"{np.mean(vals):.3f} ({' '.join(f'{v:.2f}' for v in vals)})")
            for key in KEYS:
                if name == ATFT or ATFT not in contenders:
                    cells.append("")
                    continue
                t, diff, n = pooled_t([(per_seed[s]["daily"][ATFT][key], per_seed[s]["daily"][name][key])
                                       for s in seeds])
                cells.append(f"{diff:+.4f} (t={t:+.2f}, n={n})")
            rows.append(tuple(cells))
    return rows


def graph_gains(results: dict[str, dict[int, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """Per world: atft - bypassed vs ridge own+nbr - ridge own (IC@1d, pooled t), sector goal."""
    rows: list[tuple[Any, ...]] = []
    for world, per_seed in results.items():
        cells: list[Any] = [world]
        for a, b in ((ATFT, "atft graph bypassed"), ("ridge own+nbr", "ridge own")):
            seeds = sorted(s for s, r in per_seed.items() if a in r["daily"] and b in r["daily"])
            if seeds:
                t, diff, n = pooled_t([(per_seed[s]["daily"][a]["horizon_1d"],
                                        per_seed[s]["daily"][b]["horizon_1d"]) for s in seeds])
                cells.append(f"{diff:+.4f} (t={t:+.2f})")
            else:
                cells.append("-")
        rows.append(tuple(cells))
    return rows


def validation_rows(results: dict[str, dict[int, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """Per world and atft variant: validation IC@1d / IC@5d at the best epoch, mean over seeds
    (per seed); the split every architecture choice is made on. Also the FAN/SAN branch's effect."""
    rows: list[tuple[Any, ...]] = []
    for world, per_seed in results.items():
        for name in ATFT_VARIANTS:
            seeds = sorted(s for s, r in per_seed.items() if "val_ic" in r["facts"].get(name, {}))
            if not seeds:
                continue
            cells: list[Any] = [world, f"{name} [{len(seeds)}]"]
            for key in KEYS:
                raw = [per_seed[s]["facts"][name]["val_ic"][key] for s in seeds]
                vals = [np.nan if v is None else float(v) for v in raw]  # None: no validation IC that epoch
                cells.append(f"{np.mean(vals):.4f} ({' '.join(f'{v:.4f}' for v in vals)})")
            an = [per_seed[s]["facts"][name].get("adaptive_norm") or {} for s in seeds]
            cells.append(" ".join(f"{a['branch / sequence']:.3f}/{a['output change / spread']:.3f}"
                                  for a in an if a) or "-")
            rows.append(tuple(cells))
    return rows


VAL_HEADER = ["world", "contender [seeds]", "val IC@1d (best epoch)", "val IC@5d",
              "FAN/SAN branch / sequence RMS / output change per spread, per seed"]


QUICK = {"worlds": ["sector", "supply-chain"], "seeds": [7011], "stocks": 100, "dates": 320, "epochs": 1}


def family_main(args: Any) -> int:
    """``bench_quality.py --worlds ... --seeds ... --epochs E --stocks N --dates D [--quick]``."""
    import torch

    torch.set_num_threads(1)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    args.contenders = args.contenders or [*ATFT_VARIANTS, *PEERS]
    unknown = [c for c in args.contenders if c not in ATFT_VARIANTS and c not in PEERS]
    bad = [w for w in args.worlds if w not in WORLDS]
    if unknown or bad:
        raise SystemExit(f"unknown contenders {unknown} / worlds {bad}. Fix: use {[*ATFT_VARIANTS, *PEERS]} "
                         f"and {list(WORLDS)}.")
    out_dir = Path(tempfile.mkdtemp(prefix="atft_family_"))  # panels, runs, checkpoints: ~0.3 GiB a panel
    try:
        return _run_family(args, out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _run_family(args: Any, out_dir: Path) -> int:
    print(machine_line())
    print(f"worlds {args.worlds}; panel seeds {args.seeds}; {args.stocks} stocks x {args.dates} days; "
          f"at most {args.epochs} epochs (best epoch on validation IC@1d, early stopping patience "
          f"{getattr(args, 'patience', 0) or 'off'}); training seed 0; test split read once")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for world in args.worlds:
        for seed in args.seeds:
            results.setdefault(world, {})[seed] = run_panel(world, seed, args, out_dir, print)
            print(f"  [{time.perf_counter() - t0:.0f} s] {world} seed {seed} done; load {_load()}", flush=True)
            if args.json:  # after every panel: an interrupted run keeps what it measured
                Path(args.json).write_text(json.dumps(to_json(results, args), default=str))
    print("\nIC / oracle IC on the same test rows: mean over seeds (per seed); atft - contender: "
          "mean daily dIC (paired t pooled over seeds, n dates)")
    print(md_table(["world", "contender", "IC@1d / oracle", "IC@5d / oracle", "atft - it @1d", "atft - it @5d"],
                   summarize(results, args.contenders)))
    print("\ngraph gain @1d: atft - atft graph bypassed vs linear graph gain: ridge own+nbr - ridge own (pooled t)")
    print(md_table(["world", "atft graph gain", "linear graph gain"], graph_gains(results)))
    print("\nvalidation split (where architecture choices are made)")
    print(md_table(VAL_HEADER, validation_rows(results)))
    print(f"total {time.perf_counter() - t0:.0f} s; load {_load()}")
    return 0


def to_json(results: dict[str, dict[int, dict[str, Any]]], args: Any) -> dict[str, Any]:
    """Scores, facts and daily IC series (dates as day numbers) of every panel, and the run's settings."""
    return {"settings": {k: getattr(args, k, None)
                         for k in ("stocks", "dates", "epochs", "patience", "seeds", "worlds", "overrides")},
            "results": {w: {str(s): {"facts": r["facts"], "scores": r["scores"],
                                     "daily": {n: {k: {"dates": [int(d) for d in ic.dates],
                                                       "values": [float(v) for v in ic.values]}
                                                   for k, ic in per.items()} for n, per in r["daily"].items()}}
                             for s, r in ps.items()} for w, ps in results.items()}}


def from_json(files: list[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """Merge saved runs (``--json``) into one results dict, per panel and contender: a contender of a
    panel in a later file replaces the same contender of an earlier one, others are kept."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for f in files:
        for w, ps in json.loads(Path(f).read_text())["results"].items():
            for s, r in ps.items():
                daily_ = {n: {k: DailyIC(np.array(v["dates"]), np.array(v["values"], dtype=np.float64),
                                         np.zeros(len(v["dates"]), dtype=np.int64), 0)
                              for k, v in per.items()} for n, per in r["daily"].items()}
                panel = results.setdefault(w, {}).setdefault(int(s), {"facts": {}, "scores": {}, "daily": {}})
                for part, new in (("facts", r["facts"]), ("scores", r["scores"]), ("daily", daily_)):
                    panel[part].update(new)
    return results


def print_tables(results: dict[str, dict[int, dict[str, Any]]]) -> None:
    """The two tables of ``family_main``; each contender pooled over the panels that have it."""
    for world, per_seed in results.items():
        names = [n for n in [*ATFT_VARIANTS, *PEERS] if any(n in r["scores"] for r in per_seed.values())]
        print(f"\n{world}: panel seeds {sorted(per_seed)} ([k]: seeds with that contender)")
        print(md_table(["world", "contender", "IC@1d / oracle", "IC@5d / oracle", "atft - it @1d", "atft - it @5d"],
                       summarize({world: per_seed}, names)))
    print(md_table(["world", "atft graph gain", "linear graph gain"], graph_gains(results)))
    print("\nvalidation split (where architecture choices are made)")
    print(md_table(VAL_HEADER, validation_rows(results)))


def _load() -> str:
    import os

    return "/".join(f"{v:.2f}" for v in os.getloadavg())
