"""``atft diagnose-head``: is the model's forecast spread across stocks, per horizon? (Option B)

Builds the model from the full config (fresh, seeded with ``train.seed``, or from a checkpoint),
runs one real validation day (``--data``) or a random day of the configured shape in eval mode,
and prints per horizon the shape, mean and std of the point forecast and of every quantile, and
the fusion-gate mean. Exit 1 when any horizon's point std <= threshold (a collapsed head).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atft.config import load
from atft.data.batch import DayBatch
from atft.errors import ShapeError

RANDOM_STOCKS = 256  # stocks in the random day
RANDOM_NEIGHBOURS = 8  # k of the random k-NN graph
DEFAULT_FEATURES = 32  # F of the random day when model.num_features is 0


def random_day_batch(num_stocks: int, seq_len: int, num_features: int, num_horizons: int,
                     k: int = RANDOM_NEIGHBOURS, seed: int = 0, num_sectors: int = 10,
                     date: dt.date = dt.date(2024, 1, 2)) -> DayBatch:
    """A random single-day batch with a k-NN graph in a random latent space.

    Each stock gets a latent point (its sector centre + noise); edges go to its k nearest
    neighbours (directed, no self-loops) with ``edge_attr = [cosine similarity, same_sector,
    same_market]``. Same seed -> identical batch.

    Shapes:
        features ``[N, T, F]``; targets ``[N, H]``; edge_index ``[2, N*min(k, N-1)]``;
        edge_attr ``[E, 3]``.
    """
    g = torch.Generator().manual_seed(seed)
    n = num_stocks
    features = torch.randn(n, seq_len, num_features, generator=g)  # [N, T, F]
    targets = torch.randn(n, num_horizons, generator=g)  # [N, H]
    sector = torch.randint(0, num_sectors, (n,), generator=g)
    market = torch.randint(0, 2, (n,), generator=g)
    centres = torch.randn(num_sectors, 4, generator=g)
    latent = centres[sector] + 0.5 * torch.randn(n, 4, generator=g)  # [N, 4]
    kk = min(k, n - 1)
    if kk > 0:
        dist = torch.cdist(latent, latent).fill_diagonal_(float("inf"))  # [N, N]
        nbr = dist.topk(kk, dim=1, largest=False).indices  # [N, k]
        src, dst = nbr.reshape(-1), torch.arange(n).repeat_interleave(kk)
        unit = torch.nn.functional.normalize(latent, dim=1)
        rho = (unit[src] * unit[dst]).sum(dim=1)
        edge_index = torch.stack([src, dst])  # [2, E]
        edge_attr = torch.stack([rho, (sector[src] == sector[dst]).float(),
                                 (market[src] == market[dst]).float()], dim=1)  # [E, 3]
    else:
        edge_index, edge_attr = torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3)
    return DayBatch(features=features, targets=targets, target_mask=torch.ones_like(targets, dtype=torch.bool),
                    edge_index=edge_index, edge_attr=edge_attr, day_index=torch.zeros(n, dtype=torch.long),
                    codes=[f"S{i:04d}" for i in range(n)], dates=[date])


def _moments(x: torch.Tensor) -> dict[str, float]:
    x = x.detach().double()
    return {"mean": float(x.mean()), "std": float(x.std(correction=0))}


def head_stats(model: nn.Module, batch: DayBatch, scale: Sequence[float] | None = None) -> dict[str, Any]:
    """Per-horizon spread of the forecasts on one batch, in eval mode (mode restored after).

    Args:
        model: an ``ATFT_GAT_FAN`` (anything with its output contract and ``quantiles``).
        batch: the day batch to forecast.
        scale: per-horizon factor from the training scale to return units
            (``Normalizer.target_scale``); None keeps the training scale.

    Returns:
        ``{"horizons": {key: {"shape": [N, Q], "point": {mean, std}, "quantiles": {"q0.2":
        {mean, std}, ...}}}, "fusion_gate_mean": float, "num_stocks": N}``; std is the
        cross-sectional (population) std over the batch's stocks.
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch)
    finally:
        model.train(was)
    quantiles = list(model.quantiles)  # type: ignore[arg-type]
    horizons: dict[str, Any] = {}
    factors = list(scale) if scale is not None else [1.0] * len(out["predictions"])
    for (key, pred), factor in zip(out["predictions"].items(), factors, strict=True):
        pred = pred * float(factor)
        out["point"][key] = out["point"][key] * float(factor)
        horizons[key] = {
            "shape": list(pred.shape),
            "point": _moments(out["point"][key]),
            "quantiles": {f"q{q:g}": _moments(pred[:, j]) for j, q in enumerate(quantiles)},
        }
    return {"horizons": horizons, "fusion_gate_mean": float(out["fusion_gate"].double().mean()),
            "num_stocks": int(batch.num_stocks)}


def collapsed(stats: dict[str, Any], threshold: float) -> list[str]:
    """Horizons whose point std is <= threshold (or not finite)."""
    return [k for k, s in stats["horizons"].items()
            if not math.isfinite(s["point"]["std"]) or s["point"]["std"] <= threshold]


def format_stats(stats: dict[str, Any], threshold: float) -> str:
    """Human-readable table of ``head_stats``."""
    lines = [f"{'horizon':<12} {'shape':<10} {'what':<8} {'mean':>11} {'std':>11}"]
    for key, s in stats["horizons"].items():
        shape = "x".join(str(d) for d in s["shape"])
        rows = [("point", s["point"])] + list(s["quantiles"].items())
        for i, (what, m) in enumerate(rows):
            lines.append(f"{key if i == 0 else '':<12} {shape if i == 0 else '':<10} {what:<8} "
                         f"{m['mean']:>11.6f} {m['std']:>11.6f}")
    lines.append(f"fusion gate mean: {stats['fusion_gate_mean']:.4f} (1 = temporal path only)")
    bad = collapsed(stats, threshold)
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
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    cfg = load(args.config or "default", list(args.overrides or []))
    torch.manual_seed(cfg.train.seed)
    batch, scale, units = None, None, "training scale (random input has no return units)"
    if args.data:
        from atft.data.pipeline import prepare

        prepared = prepare(cfg, args.data)
        batch, scale, units = prepared.day_batch("val"), prepared.normalizer.target_scale, "returns"
    if args.checkpoint:
        from atft.model.checkpoint import load_model

        f = batch.features.shape[-1] if batch is not None else None
        model, _ = load_model(args.checkpoint, cfg, f)
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
    stats = head_stats(model, batch, scale)
    print(f"diagnose-head: {source}; {what}; edges={batch.edge_index.shape[1]}; units: {units}")
    print(format_stats(stats, threshold))
    return 1 if collapsed(stats, threshold) else 0
