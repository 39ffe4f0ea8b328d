"""``atft diagnose-head``: is the model's forecast spread across stocks, per horizon? (Option B)

Builds the model from the full config (fresh, seeded with ``train.seed``, or from a checkpoint,
with its own normalizer), runs one real validation day (``--data``) or a random day of the
configured shape (``atft.synth.batches.random_day_batch``) in eval mode, and prints per horizon
the shape, mean and std of the point forecast and of every quantile, and the fusion-gate mean
(``atft.eval.spread.head_spread``, the same figure as the health suite's ``head_std``). Exit 1
when any horizon's point std <= threshold (a collapsed head).
"""

from __future__ import annotations

import argparse
import sys

import torch

from atft.config import load
from atft.errors import ShapeError
from atft.eval.spread import HeadSpread

RANDOM_STOCKS = 256  # stocks in the random day
DEFAULT_FEATURES = 32  # F of the random day when model.num_features is 0


def format_spread(spread: HeadSpread, threshold: float) -> str:
    """Human-readable table of a ``HeadSpread``."""
    lines = [f"{'horizon':<12} {'shape':<10} {'what':<8} {'mean':>11} {'std':>11}"]
    for key, s in spread.horizons.items():
        shape = "x".join(str(d) for d in s.shape)
        rows = [("point", {"mean": s.point_mean, "std": s.point_std}), *s.quantiles.items()]
        for i, (what, m) in enumerate(rows):
            lines.append(f"{key if i == 0 else '':<12} {shape if i == 0 else '':<10} {what:<8} "
                         f"{m['mean']:>11.6f} {m['std']:>11.6f}")
    lines.append(f"fusion gate mean: {spread.fusion_gate_mean:.4f} (1 = temporal path only)")
    bad = spread.collapsed(threshold)
    lines.append(f"point std threshold {threshold:g}: " + (f"COLLAPSED {bad}" if bad else "ok (all horizons)"))
    return "\n".join(lines)


def cli_diagnose_head(args: argparse.Namespace) -> int:
    """``atft diagnose-head``: exit 0 when every horizon's point std > threshold, 1 when a head
    collapsed, 2 when the model cannot be built for the data (F mismatch, bad input)."""
    try:
        return _diagnose(args)
    except ShapeError as exc:
        print(f"atft diagnose-head: error: {exc}", file=sys.stderr)
        return 2


def _diagnose(args: argparse.Namespace) -> int:
    from atft.eval.spread import head_spread
    from atft.model.atft_gat_fan import ATFT_GAT_FAN
    from atft.synth.batches import random_day_batch

    cfg = load(args.config or "default", list(args.overrides or []))
    torch.manual_seed(cfg.train.seed)
    restored = None
    if args.checkpoint:
        from atft.train.checkpoint import load_model

        restored = load_model(args.checkpoint, cfg)
    batch, scale, units = None, None, "training scale (random input has no return units)"
    if args.data:
        from atft.train.prepare import prepare

        prepared = prepare(cfg, args.data, normalizer=restored.normalizer if restored else None)
        batch, scale, units = prepared.day_batch("val"), prepared.normalizer.target_scale, "returns"
    if restored is not None:
        from atft.train.checkpoint import require_features

        model = restored.model
        require_features(args.checkpoint, model.num_features,
                         batch.features.shape[-1] if batch is not None else None, "the data")
        source = f"checkpoint {args.checkpoint}"
    else:
        f = batch.features.shape[-1] if batch is not None else (cfg.model.num_features or DEFAULT_FEATURES)
        model = ATFT_GAT_FAN.from_config(cfg, f)
        source = f"fresh model (seed {cfg.train.seed})"
    if batch is None:
        batch = random_day_batch(RANDOM_STOCKS, cfg.data.sequence_length, model.num_features,
                                 len(cfg.data.horizons), seed=cfg.train.seed)
        what = f"random day: N={RANDOM_STOCKS}, T={cfg.data.sequence_length}, F={model.num_features}"
    else:
        what = f"val day {batch.dates[0]}: N={batch.num_stocks}, T={batch.features.shape[1]}, F={batch.features.shape[2]}"
    threshold = cfg.health.min_head_std if args.threshold is None else float(args.threshold)
    spread = head_spread(model, batch, model.quantiles, scale)
    print(f"diagnose-head: {source}; {what}; edges={batch.edge_index.shape[1]}; units: {units}")
    print(format_spread(spread, threshold))
    return 1 if spread.collapsed(threshold) else 0
