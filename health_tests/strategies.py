"""Hypothesis strategies for DayBatch edge cases (bounded: N <= 12, T <= the configured length).

Edge cases named by the issue: N=1, N=2, no edges, isolated stocks, T from 1 to the configured
length, NaN in features, a day whose targets are all missing, several packed days.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import torch
from hypothesis import strategies as st

from atft.data.batch import DayBatch


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


@st.composite
def batch_specs(draw: st.DrawFn, max_t: int) -> dict[str, object]:
    """Parameters of one edge-case batch."""
    n = draw(st.sampled_from([1, 2, 3, 5, 12]))
    return {
        "n": n,
        "t": draw(st.integers(1, max_t)),
        "edges": draw(st.sampled_from(["none", "random", "isolated"])),
        "seed": draw(st.integers(0, 2**16)),
        "nan_features": draw(st.booleans()),
        "all_targets_missing": draw(st.booleans()),
        "days": draw(st.sampled_from([1, 1, 2])) if n >= 2 else 1,
    }
