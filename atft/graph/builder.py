"""Per-date stock-correlation graph (design.md section 2; failure mode 9).

For date d the window is ``panel.returns[d - lookback + 1 .. d]``: backward 1-day returns realized
by d (the 1-day target lagged by one date), never a later row -- no look-ahead. Pairwise-complete
Pearson correlations come from matrix products of the NaN mask and the zero-filled returns (no
loop over stocks), optionally of market-residual returns (``residual``); each stock keeps its
``top_k`` neighbours by ``rho`` (or ``|rho|``, ``rank_by``) above ``threshold`` and, with
``sector_k``, its ``sector_k`` most correlated same-sector stocks as well (whatever their ``rho``:
the peers a quant lists by industry code, e.g. J-Quants Sector33); the edge set is made symmetric
(union), without self loops. Graphs are cached in a bounded LRU keyed by (date
index, date, the batch's stock rows and codes, parameters). A builder may be used from the loader's
prefetch thread and the main thread at once: the cache is guarded by a lock (a graph itself is
built outside it).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from atft.config import GraphConfig
from atft.data.batch import Graph, empty_graph
from atft.data.panel import Panel
from atft.errors import InputError

ROW_CHUNK = 128  # rows of the correlation matrix computed at once ([chunk, N] buffers stay in cache)


RESIDUALS = ("none", "demean", "beta")
RANKINGS = ("rho", "abs")


def _prepare(returns: np.ndarray, residual: str = "none") -> tuple[Tensor, Tensor, Tensor]:
    """Mask, centred zero-filled (residual) returns and their squares.

    ``residual`` removes the common market move first, so that it does not dominate every
    correlation (with a 1 %/day market factor, two unrelated stocks correlate at ~0.2):

    * ``"none"``: the returns as given;
    * ``"demean"``: each date's cross-sectional mean return (over the window's observed stocks)
      subtracted;
    * ``"beta"``: the market-model residual ``r_i - beta_i m`` with ``m`` that cross-sectional
      mean and ``beta_i`` the least-squares slope of ``r_i`` on ``m`` over the dates ``i`` is
      observed in the window (plain demeaning leaves ``(beta_i - 1) m``, which makes high- and
      low-beta stocks look correlated).

    Shapes:
        returns: ``[L, N]`` -> m, x, x2: ``[L, N]`` float32.
    """
    if residual not in RESIDUALS:
        raise InputError(f"graph.residual must be one of {RESIDUALS}, got '{residual}'.")
    r = torch.from_numpy(np.ascontiguousarray(returns, dtype=np.float32))
    m = (~torch.isnan(r)).to(torch.float32)  # [L, N]
    x = torch.nan_to_num(r, nan=0.0)
    cnt = m.sum(0).clamp_min(1.0)  # [N]
    if residual != "none":
        mkt = x.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)  # [L, 1]
        if residual == "demean":
            x = (x - mkt) * m
        else:
            mc = (mkt - (m * mkt).sum(0) / cnt) * m  # [L, N] market centred over i's dates
            xc = (x - x.sum(0) / cnt) * m
            var = (mc * mc).sum(0)  # [N]
            beta = torch.where(var > 0, (xc * mc).sum(0) / var.clamp_min(1e-30), torch.zeros_like(var))
            x = (x - mkt * beta) * m  # [L, N]
    x = (x - x.sum(0) / cnt) * m  # centred per column (accuracy), 0 where missing
    return m, x, x * x


def _corr_rows(m: Tensor, x: Tensor, x2: Tensor, r0: int, r1: int) -> tuple[Tensor, Tensor]:
    """Pairwise-complete Pearson correlation of rows ``r0:r1`` against every stock, by matmuls.

    With ``M = ~isnan(R)`` and ``X = R`` zero-filled: ``n = M^T M``, ``Sx = X^T M`` (sum of i over
    the dates j is observed), ``Sy = M^T X``, ``Sxx = (X^2)^T M``, ``Syy = M^T X^2``,
    ``Sxy = X^T X``; per pair ``cov = Sxy - Sx Sy / n``, ``var_i = Sxx - Sx^2 / n``,
    ``var_j = Syy - Sy^2 / n`` (computed in place).

    Shapes:
        m, x, x2: ``[L, N]`` -> (rho ``[r1 - r0, N]`` float32, NaN where undefined; counts ``[r1 - r0, N]``).
    """
    mc, xc, x2c = m[:, r0:r1].T, x[:, r0:r1].T, x2[:, r0:r1].T  # [c, L]
    n = mc @ m  # [c, N] overlapping observations
    inv_n = n.clamp_min(1.0).reciprocal_()
    sx = xc @ m  # [c, N]: sum of x_i over the dates both i and j are observed
    sy = mc @ x  # [c, N]: sum of x_j over those dates
    cov = (xc @ x).sub_(sx * sy * inv_n)
    var_i = (x2c @ m).sub_(sx.mul_(sx).mul_(inv_n)).clamp_min_(0.0)
    var_j = (mc @ x2).sub_(sy.mul_(sy).mul_(inv_n)).clamp_min_(0.0)
    denom = var_i.mul_(var_j).sqrt_()
    rho = cov.div_(denom).clamp_(-1.0, 1.0)
    rho.masked_fill_(denom <= 0, float("nan"))
    return rho, n


def _nbytes(graph: Graph) -> int:
    return sum(t.element_size() * t.numel() for t in graph)


def _unique_first(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique keys and the position of the first occurrence of each.

    Shapes:
        keys: ``[E]`` long -> (unique ``[U]``, first ``[U]``).
    """
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel()), reduce="amin")
    return uniq, first


class GraphBuilder:
    """Builds the per-date correlation graph of a batch's stocks.

    Keyword-only arguments; the defaults are ``GraphConfig``'s (one source of truth).

    Args:
        lookback: L, dates of backward returns in the window (ending at d, inclusive).
        min_obs: minimum overlapping observations for a pair to be considered.
        top_k: neighbours kept per stock by ``|rho|`` (before symmetrization).
        threshold: minimum score (``rho`` or ``|rho|``, strictly above) for an edge.
        cache_size: graphs kept in the LRU cache; 0 disables caching.
        cache_bytes: memory bound of the cache as well (a 4,000-stock graph holds ~120k edges,
            ~3.4 MB); least recently used graphs are evicted past either bound.
        sector_k: same-sector neighbours kept per stock besides the ``top_k`` (the most correlated
            first, no threshold, ``rho`` 0 where undefined); 0 = none. Stocks of unknown sector
            (-1) get none.
        residual: "none" | "demean" | "beta": which market move is removed from the returns
            before correlating (see ``_prepare``).
        rank_by: "rho" keeps the most positively correlated neighbours (co-movement peers);
            "abs" ranks by ``|rho|`` (strong negative correlations become edges too). The
            threshold applies to the same score.
        num_threads: torch threads while a graph is built (0 = leave torch's setting). Idle, 2
            threads build N=4,000 in half the time of 1 (bench/RESULTS.md section 2); on a 2-core
            machine busy with other work their OpenMP spin made it 20x slower, so 1 is the
            setting for shared CPUs (train.num_threads=1 gives it to the whole run). Applied
            in the main thread only: torch's thread count is process-wide, and a prefetch thread
            changing it would change the training step's under its feet.
    """

    def __init__(self, *, lookback: int = GraphConfig.lookback, min_obs: int = GraphConfig.min_obs,
                 top_k: int = GraphConfig.top_k, threshold: float = GraphConfig.threshold,
                 cache_size: int = GraphConfig.cache_size, cache_bytes: int = 2 * 2**30,
                 sector_k: int = GraphConfig.sector_k, residual: str = GraphConfig.residual,
                 rank_by: str = GraphConfig.rank_by, num_threads: int = GraphConfig.num_threads) -> None:
        if (lookback < 2 or min_obs < 2 or top_k < 1 or not 0.0 <= threshold < 1.0 or cache_size < 0
                or sector_k < 0):
            raise InputError(f"bad graph parameters lookback={lookback} min_obs={min_obs} top_k={top_k} "
                             f"threshold={threshold} cache_size={cache_size} sector_k={sector_k}. Fix: lookback, "
                             "min_obs >= 2, top_k >= 1, 0 <= threshold < 1, cache_size >= 0, sector_k >= 0 "
                             "(see GraphConfig).")
        if residual not in RESIDUALS or rank_by not in RANKINGS:
            raise InputError(f"graph.residual='{residual}' / graph.rank_by='{rank_by}' unknown. Fix: residual "
                             f"one of {RESIDUALS}, rank_by one of {RANKINGS} (see GraphConfig).")
        if min_obs > lookback:
            raise InputError(f"graph.min_obs={min_obs} exceeds graph.lookback={lookback}: no pair could "
                             "qualify and every graph would be empty. Fix: set min_obs <= lookback.")
        self.lookback = int(lookback)
        self.min_obs = int(min_obs)
        self.top_k = int(top_k)
        self.threshold = float(threshold)
        self.cache_size = int(cache_size)
        self.cache_bytes = int(cache_bytes)
        self.sector_k = int(sector_k)
        self.residual = str(residual)
        self.rank_by = str(rank_by)
        self.num_threads = max(0, int(num_threads))
        self._bytes = 0
        self._cache: OrderedDict[tuple[object, ...], Graph] = OrderedDict()
        self._lock = threading.Lock()  # the cache and its counters (prefetch thread + main thread)
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_config(cls, gcfg: GraphConfig) -> GraphBuilder:
        """From ``cfg.graph`` (a ``GraphConfig``)."""
        return cls(lookback=int(gcfg.lookback), min_obs=int(gcfg.min_obs), top_k=int(gcfg.top_k),
                   threshold=float(gcfg.threshold), cache_size=int(gcfg.cache_size),
                   sector_k=int(gcfg.sector_k), residual=str(gcfg.residual), rank_by=str(gcfg.rank_by),
                   num_threads=int(gcfg.num_threads))

    @property
    def params(self) -> tuple[int, int, int, float, str, str, int]:
        return (self.lookback, self.min_obs, self.top_k, self.threshold, self.residual, self.rank_by, self.sector_k)

    def build(self, returns_window: np.ndarray, sector: np.ndarray, market: np.ndarray) -> Graph:
        """Correlation graph of the window's stocks (torch limited to ``num_threads`` meanwhile).

        Shapes:
            returns_window: ``[L, N]`` float, NaN missing; sector, market: ``[N]`` int (-1 unknown).
            -> edge_index ``[2, E]`` long (indices into the N columns, symmetric, no self loops),
            edge_attr ``[E, 3]`` float32 ``[rho, same_sector, same_market]``.
        """
        before = torch.get_num_threads()
        if self.num_threads and self.num_threads != before and threading.current_thread() is threading.main_thread():
            torch.set_num_threads(self.num_threads)
        try:
            return self._build(returns_window, sector, market)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def _build(self, returns_window: np.ndarray, sector: np.ndarray, market: np.ndarray) -> Graph:
        num_n = returns_window.shape[1]
        sec = torch.from_numpy(np.asarray(sector, dtype=np.int64))
        by_sector = self.sector_k > 0 and bool((sec >= 0).any())
        if num_n < 2 or (returns_window.shape[0] < self.min_obs and not by_sector):
            return empty_graph()
        m, x, x2 = _prepare(returns_window, self.residual)
        k = min(self.top_k, num_n - 1)
        src_l, dst_l, rho_l = [], [], []
        for r0 in range(0, num_n, ROW_CHUNK):  # row blocks: no [N, N] matrix is ever held
            r1 = min(r0 + ROW_CHUNK, num_n)
            rho, n = _corr_rows(m, x, x2, r0, r1)  # [c, N]
            rho.masked_fill_(n < self.min_obs, float("nan"))  # too few overlapping dates: undefined
            local = torch.arange(r1 - r0)
            score = rho.abs() if self.rank_by == "abs" else rho.clone()
            bad = ~(score > self.threshold)  # NaN rho fails the comparison
            bad[local, local + r0] = True  # no self loops
            score.masked_fill_(bad, -1.0)
            top_val, top_idx = torch.topk(score, k, dim=1)  # [c, k]
            keep = top_val > self.threshold
            src_l.append((local + r0).unsqueeze(1).expand(-1, k)[keep])
            dst_l.append(top_idx[keep])
            rho_l.append(rho.gather(1, top_idx)[keep])
            if by_sector:  # the sector_k most correlated same-sector stocks, whatever their rho
                same = (sec[r0:r1, None] == sec[None, :]) & (sec[r0:r1, None] >= 0)  # [c, N]
                same[local, local + r0] = False
                s_score = torch.where(same, torch.nan_to_num(rho, nan=-2.0), torch.tensor(-3.0))
                ks = min(self.sector_k, num_n - 1)
                s_val, s_idx = torch.topk(s_score, ks, dim=1)  # [c, ks]
                s_keep = s_val > -3.0
                src_l.append((local + r0).unsqueeze(1).expand(-1, ks)[s_keep])
                dst_l.append(s_idx[s_keep])
                rho_l.append(torch.nan_to_num(rho.gather(1, s_idx)[s_keep], nan=0.0))
        src, dst, w = torch.cat(src_l), torch.cat(dst_l), torch.cat(rho_l)
        if src.numel() == 0:
            return empty_graph()
        # union with the reversed edges: one entry per unordered pair, then both directions
        lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
        pair, first = _unique_first(lo * num_n + hi)
        lo, hi, w = pair // num_n, pair % num_n, w[first]
        src, dst, w = torch.cat([lo, hi]), torch.cat([hi, lo]), torch.cat([w, w])
        mkt = torch.from_numpy(np.asarray(market, dtype=np.int64))
        same_sec = (sec[src] == sec[dst]) & (sec[src] >= 0)
        same_mkt = (mkt[src] == mkt[dst]) & (mkt[src] >= 0)
        edge_attr = torch.stack([w, same_sec.float(), same_mkt.float()], dim=1)  # [E, 3]
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
        with self._lock:
            if self.cache_size and key in self._cache:
                self._cache.move_to_end(key)
                self.hits += 1
                return self._cache[key]
            self.misses += 1
        window = panel.returns[max(0, d - self.lookback + 1): d + 1][:, rows]  # [L, n]
        graph = self.build(window, panel.sector[rows], panel.market[rows])
        if self.cache_size:
            with self._lock:
                if key not in self._cache:  # another thread may have built it meanwhile
                    self._bytes += _nbytes(graph)
                self._cache[key] = graph
                while len(self._cache) > self.cache_size or (self._bytes > self.cache_bytes and len(self._cache) > 1):
                    self._bytes -= _nbytes(self._cache.popitem(last=False)[1])
        return graph

    def _key(self, panel: Panel, d: int, rows: np.ndarray) -> tuple[object, ...]:
        """(date index, full date, digest of rows and their codes, parameters)."""
        h = hashlib.blake2b(rows.tobytes(), digest_size=16)
        h.update("\x00".join(np.asarray(panel.codes, dtype=object)[rows].tolist()).encode())
        return (d, panel.dates[d].isoformat(), h.hexdigest(), self.params)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    @property
    def cached(self) -> int:
        """Number of cached graphs (not ``__len__``: a builder with an empty cache is still truthy)."""
        return len(self._cache)
