"""Synthetic day batches for diagnostics and property tests (no dataset needed).

* ``random_day_batch``: one random day with a k-NN graph in a latent sector space, the input of
  ``atft diagnose-head`` without ``--data``;
* ``make_batch``: edge-case batches of any shape (N = 1, no edges, isolated stocks, NaN
  features, all targets missing, packed days), the examples of the health suite's hypothesis
  strategies.
Both are seeded: the same arguments give the same batch.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import torch

from atft.data.batch import DayBatch

RANDOM_NEIGHBOURS = 8  # k of the random k-NN graph


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


def make_batch(n: int, t: int, f: int, h: int, *, edges: str = "random", seed: int = 0,
               nan_features: bool = False, all_targets_missing: bool = False,
               days: int = 1) -> DayBatch:
    """A synthetic DayBatch; ``edges`` in {"none", "random", "isolated"} (isolated: half the stocks
    have no edge). Several ``days`` split the stocks into consecutive blocks with per-day graphs."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, t, f)).astype(np.float32)
    if nan_features:
        x[g.random((n, t, f)) < 0.2] = np.nan
    y = (0.02 * g.standard_normal((n, h))).astype(np.float32)
    if all_targets_missing:
        y[:] = np.nan
    day_index = np.sort(g.integers(0, days, size=n)) if days > 1 else np.zeros(n, dtype=np.int64)
    src, dst = [], []
    if edges != "none" and n > 1:
        pool = np.arange(n) if edges == "random" else np.arange(n)[: max(2, n // 2)]
        for _ in range(3 * len(pool)):
            a, b = g.choice(pool, 2, replace=False)
            if day_index[a] == day_index[b]:
                src += [a, b]
                dst += [b, a]
    ei = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    ea = torch.cat([torch.rand(ei.shape[1], 1) * 2 - 1, torch.randint(0, 2, (ei.shape[1], 2)).float()], 1)
    yt = torch.from_numpy(y)
    return DayBatch(
        features=torch.from_numpy(x), targets=yt, target_mask=~torch.isnan(yt), edge_index=ei,
        edge_attr=ea, day_index=torch.from_numpy(day_index).long(),
        codes=[f"{1000 + i}" for i in range(n)],
        dates=[dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(max(days, 1))],
        observed=torch.ones(n, t, dtype=torch.bool), raw_targets=yt.clone(),
    )
