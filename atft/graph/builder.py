"""Per-date stock-correlation graph (design.md section 2; failure mode 9).

For date d the window is ``panel.returns[d - lookback + 1 .. d]``: backward 1-day returns realized
by d (the 1-day target lagged by one date), never a later row -- no look-ahead. Pairwise-complete
Pearson correlations come from matrix products of the NaN mask and the zero-filled returns (no
loop over stocks); each stock keeps its ``top_k`` neighbours by ``|rho|`` above ``threshold``, the
edge set is made symmetric (union), without self loops. Graphs are cached in a bounded LRU keyed by
(date index, date, the batch's stock rows and codes, parameters).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from atft.data.panel import Panel
from atft.errors import InputError

Graph = tuple[Tensor, Tensor]  # (edge_index [2, E] long, edge_attr [E, 3] float32)


def empty_graph() -> Graph:
    """A graph with no edges.

    Shapes:
        -> edge_index ``[2, 0]`` long, edge_attr ``[0, 3]`` float32.
    """
    return torch.zeros((2, 0), dtype=torch.long), torch.zeros((0, 3), dtype=torch.float32)


def pairwise_corr(returns: np.ndarray) -> tuple[Tensor, Tensor]:
    """Pearson correlation of every pair over their common observations, by matrix products.

    With ``M = ~isnan(R)`` and ``X = R`` zero-filled (and centred per column for accuracy):
    ``n = M^T M``, ``Sx = X^T M`` (sum of i over the dates j is observed), ``Sxx = (X^2)^T M``,
    ``Sxy = X^T X``; ``cov = Sxy - Sx Sy^T / n`` and ``var_i = Sxx - Sx^2 / n`` per pair.

    Shapes:
        returns: ``[L, N]`` (NaN missing) -> (rho ``[N, N]`` float32, NaN where undefined;
        counts ``[N, N]`` float32 of overlapping observations).
    """
    r = torch.from_numpy(np.asarray(returns, dtype=np.float32))
    m = (~torch.isnan(r)).to(torch.float32)  # [L, N]
    cnt_col = m.sum(0).clamp_min(1.0)
    x = torch.nan_to_num(r, nan=0.0)
    x = (x - x.sum(0) / cnt_col) * m  # centred per column, 0 where missing
    n = m.T @ m  # [N, N]
    sx = x.T @ m  # [N, N]: sx[i, j] = sum over common dates of x_i
    sxx = (x * x).T @ m
    sxy = x.T @ x
    with torch.no_grad():
        inv_n = 1.0 / n.clamp_min(1.0)
        cov = sxy - sx * sx.T * inv_n
        var_i = (sxx - sx * sx * inv_n).clamp_min(0.0)  # [N, N]: var of i over (i, j) common dates
        denom = torch.sqrt(var_i * var_i.T)
        rho = torch.where(denom > 0, cov / denom.clamp_min(1e-30), torch.full_like(cov, float("nan")))
    return rho.clamp(-1.0, 1.0), n


class GraphBuilder:
    """Builds the per-date correlation graph of a batch's stocks.

    Args:
        lookback: L, dates of backward returns in the window (ending at d, inclusive).
        min_obs: minimum overlapping observations for a pair to be considered.
        top_k: neighbours kept per stock by ``|rho|`` (before symmetrization).
        threshold: minimum ``|rho|`` (strictly above) for an edge.
        cache_size: graphs kept in the LRU cache; 0 disables caching.
    """

    def __init__(self, lookback: int = 60, min_obs: int = 40, top_k: int = 20, threshold: float = 0.3,
                 cache_size: int = 4096) -> None:
        if lookback < 2 or min_obs < 2 or top_k < 1 or not 0.0 <= threshold < 1.0 or cache_size < 0:
            raise InputError(f"bad graph parameters lookback={lookback} min_obs={min_obs} top_k={top_k} "
                             f"threshold={threshold} cache_size={cache_size}. Fix: lookback, min_obs >= 2, "
                             "top_k >= 1, 0 <= threshold < 1, cache_size >= 0 (see GraphConfig).")
        if min_obs > lookback:
            raise InputError(f"graph.min_obs={min_obs} exceeds graph.lookback={lookback}: no pair could "
                             "qualify and every graph would be empty. Fix: set min_obs <= lookback.")
        self.lookback = int(lookback)
        self.min_obs = int(min_obs)
        self.top_k = int(top_k)
        self.threshold = float(threshold)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[object, ...], Graph] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_config(cls, gcfg: object) -> GraphBuilder:
        """From ``cfg.graph`` (a ``GraphConfig``)."""
        g = gcfg
        return cls(int(g.lookback), int(g.min_obs), int(g.top_k), float(g.threshold),  # type: ignore[attr-defined]
                   int(g.cache_size))  # type: ignore[attr-defined]

    @property
    def params(self) -> tuple[int, int, int, float]:
        return (self.lookback, self.min_obs, self.top_k, self.threshold)

    def build(self, returns_window: np.ndarray, sector: np.ndarray, market: np.ndarray) -> Graph:
        """Correlation graph of the window's stocks.

        Shapes:
            returns_window: ``[L, N]`` float, NaN missing; sector, market: ``[N]`` int (-1 unknown).
            -> edge_index ``[2, E]`` long (indices into the N columns, symmetric, no self loops),
            edge_attr ``[E, 3]`` float32 ``[rho, same_sector, same_market]``.
        """
        num_n = returns_window.shape[1]
        if num_n < 2 or returns_window.shape[0] < self.min_obs:
            return empty_graph()
        rho, n = pairwise_corr(returns_window)
        score = rho.abs()
        ok = (n >= self.min_obs) & (score > self.threshold) & ~torch.isnan(rho)
        ok.fill_diagonal_(False)
        score = torch.where(ok, score, torch.full_like(score, -1.0))  # [N, N]
        k = min(self.top_k, num_n - 1)
        top_val, top_idx = torch.topk(score, k, dim=1)  # [N, k]
        keep = top_val > self.threshold
        rows = torch.arange(num_n).unsqueeze(1).expand(-1, k)
        adj = torch.zeros((num_n, num_n), dtype=torch.bool)
        adj[rows[keep], top_idx[keep]] = True
        adj |= adj.T.clone()  # union: symmetric
        src, dst = adj.nonzero(as_tuple=True)
        sec = torch.from_numpy(np.asarray(sector, dtype=np.int64))
        mkt = torch.from_numpy(np.asarray(market, dtype=np.int64))
        same_sec = (sec[src] == sec[dst]) & (sec[src] >= 0)
        same_mkt = (mkt[src] == mkt[dst]) & (mkt[src] >= 0)
        edge_attr = torch.stack([rho[src, dst], same_sec.float(), same_mkt.float()], dim=1)  # [E, 3]
        return torch.stack([src, dst]), edge_attr.to(torch.float32)

    def for_date(self, panel: Panel, d: int, rows: np.ndarray) -> Graph:
        """Graph at date index ``d`` for the stocks ``rows`` (indices returned are into ``rows``).

        Uses ``panel.returns[max(0, d - lookback + 1) .. d]`` only (returns realized by d).
        Cached: the returned tensors are shared, do not modify them in place.

        Shapes:
            rows: ``[n]`` int stock indices into the panel -> edge_index ``[2, E]``, edge_attr ``[E, 3]``.
        """
        d = int(d)
        if not 0 <= d < panel.num_dates:
            raise InputError(f"date index {d} outside the panel's {panel.num_dates} dates. Fix: pass 0 <= d < D.")
        rows = np.asarray(rows, dtype=np.int64)
        key = self._key(panel, d, rows)
        if self.cache_size and key in self._cache:
            self._cache.move_to_end(key)
            self.hits += 1
            return self._cache[key]
        self.misses += 1
        window = panel.returns[max(0, d - self.lookback + 1): d + 1][:, rows]  # [L, n]
        graph = self.build(window, panel.sector[rows], panel.market[rows])
        if self.cache_size:
            self._cache[key] = graph
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return graph

    def _key(self, panel: Panel, d: int, rows: np.ndarray) -> tuple[object, ...]:
        """(date index, full date, digest of rows and their codes, parameters)."""
        h = hashlib.blake2b(rows.tobytes(), digest_size=16)
        h.update("\x00".join(np.asarray(panel.codes, dtype=object)[rows].tolist()).encode())
        return (d, panel.dates[d].isoformat(), h.hexdigest(), self.params)

    def clear_cache(self) -> None:
        self._cache.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        """Number of cached graphs."""
        return len(self._cache)
