"""Ceilings of a synthetic panel besides the oracle: what observable data lets a linear model reach.

``observable_ceiling`` fits, on the first ``train_fraction`` of the dates, a ridge per horizon on
(a) a stock's own features, (b) own features + the mean of the features over its listed
same-sector stocks + their mean over its ``top_k`` correlation neighbours, and scores both on the
last ``test_fraction`` of the dates (the model's test split, up to its warm-up and embargo),
next to the oracle and the own-features-only oracle on the same dates and rows.

Choices (documented contract): the correlation graph is one static graph from the training
dates' cross-sectionally demeaned 1-day returns (top ``top_k`` by correlation, self excluded), so
it uses no date after the fit window; the features are the true values (the ~1 % null cells are
ignored); the fit uses the rows with every horizon's target known and at most ``max_fit_dates`` training dates, evenly spaced (memory and time at
4,000 stocks); targets are demeaned per date. This is a reachable floor for "observable linear",
not the best observable predictor (a nonlinear or regime world leaves more on the table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from atft.eval.inference import ic_summary
from atft.horizons import output_key
from atft.synth.oracle import daily_ic


def correlation_neighbours(returns: np.ndarray, listed: np.ndarray, top_k: int) -> np.ndarray:
    """Top ``top_k`` correlation neighbours per stock from demeaned returns. ``[D, N] -> [N, k]``."""
    r = np.where(listed & np.isfinite(returns), returns, np.nan)
    r = r - np.nanmean(r, axis=1, keepdims=True)
    r = np.nan_to_num(r)
    sd = np.sqrt((r**2).sum(0))
    corr = (r.T @ r) / np.maximum(np.outer(sd, sd), 1e-12)
    np.fill_diagonal(corr, -np.inf)
    k = min(top_k, r.shape[1] - 1)
    return np.argsort(-corr, axis=1)[:, :k]


def neighbour_design(x: np.ndarray, rows: np.ndarray, listed: np.ndarray, sector: np.ndarray,
                     nbr: np.ndarray) -> np.ndarray:
    """Own features, same-sector mean, correlation-neighbour mean of one date: ``[n, 3F]``.

    Shapes:
        x: ``[N, F]`` one date's features; rows: ``[n]`` stocks scored; listed: ``[N]`` bool;
        sector: ``[N]``; nbr: ``[N, k]``.
    """
    lf = listed.astype(np.float64)
    xs = np.where(listed[:, None], x, 0.0)
    g = int(sector.max()) + 1
    onehot = np.zeros((g, x.shape[0]))
    onehot[sector, np.arange(x.shape[0])] = 1.0
    sums = onehot @ xs  # [G, F]
    counts = onehot @ lf
    sec = (sums[sector[rows]] - xs[rows]) / np.maximum(counts[sector[rows]] - lf[rows], 1.0)[:, None]
    nl = lf[nbr[rows]]  # [n, k]
    nb = np.einsum("nkf,nk->nf", xs[nbr[rows]], nl) / np.maximum(nl.sum(1), 1.0)[:, None]
    return np.concatenate([x[rows], sec, nb], axis=1)


def observable_ceiling(x: np.ndarray, listed: np.ndarray, sector: np.ndarray, targets: np.ndarray,
                       mu: dict[int, np.ndarray], mu_own: dict[int, np.ndarray], horizons: Sequence[int], *,
                       train_fraction: float = 0.70, test_fraction: float = 0.15, top_k: int = 8,
                       alpha: float = 1.0, max_fit_dates: int = 400,
                       min_stocks: int = 20) -> dict[str, dict[str, float]]:
    """Per horizon key (none for a panel too short to split): ``oracle_ic``, ``own_oracle_ic``, ``linear_own_ic``, ``linear_observable_ic``
    on the test dates and their ratios to ``oracle_ic`` (``*_ratio``).

    Shapes:
        x: ``[D, N, F]``; listed: ``[D, N]``; sector: ``[N]``; targets: ``[D, N, H]`` (``feat_ret_1d``
        first when 1 is a horizon); mu, mu_own: horizon -> ``[D, N]``.
    """
    d = x.shape[0]
    n_train = int(d * train_fraction)
    test = np.arange(d - int(d * test_fraction), d)
    hz = [int(h) for h in horizons]
    if n_train - max(hz) < 2 or test.size < 2 or x.shape[1] < 3:
        return {}  # too short a panel for a fit window and a test window
    r1 = targets[..., hz.index(1)] if 1 in hz else targets[..., 0]
    nbr = correlation_neighbours(r1[:n_train - 1], listed[:n_train - 1], top_k)
    fit_days = np.unique(np.linspace(0, n_train - max(hz) - 1, min(max_fit_dates, n_train - max(hz))).astype(int))

    def design(t: int, rows: np.ndarray) -> np.ndarray:
        return neighbour_design(x[t].astype(np.float64), rows, listed[t], sector, nbr)

    nf, nh = x.shape[2], len(hz)
    gram = np.zeros((3 * nf, 3 * nf))
    rhs = np.zeros((3 * nf, nh))
    for t in fit_days:  # one design per date for every horizon: rows with every target known
        y = targets[t].astype(np.float64)  # [N, H]
        rows = np.flatnonzero(listed[t] & np.isfinite(y).all(1))
        if rows.size < min_stocks:
            continue
        a = design(int(t), rows)
        gram += a.T @ a
        rhs += a.T @ (y[rows] - y[rows].mean(0))
    if not np.trace(gram) > 0:  # no fit date with min_stocks stocks
        return {}
    reg = alpha * np.trace(gram) / gram.shape[0] * 1e-3 * np.eye(3 * nf)  # ridge: alpha x 1e-3 x mean diagonal
    w_all = np.linalg.solve(gram + reg, rhs)  # [3F, H]
    w_own = np.linalg.solve(gram[:nf, :nf] + reg[:nf, :nf], rhs[:nf])  # [F, H]
    p_all = np.full((*listed.shape, nh), np.nan)
    p_own = np.full((*listed.shape, nh), np.nan)
    for t in test:
        rows = np.flatnonzero(listed[t])
        if rows.size:
            a = design(int(t), rows)
            p_all[t, rows], p_own[t, rows] = a @ w_all, a[:, :nf] @ w_own
    out: dict[str, dict[str, float]] = {}
    for j, h in enumerate(hz):
        y = targets[..., j].astype(np.float64)
        ok = np.isfinite(y) & np.isfinite(p_all[..., j])
        ics = {name: ic_summary(daily_ic(pred, y, ok, min_stocks).values)["ic"]
               for name, pred in (("oracle_ic", mu[h]), ("own_oracle_ic", mu_own[h]),
                                  ("linear_own_ic", p_own[..., j]), ("linear_observable_ic", p_all[..., j]))}
        row = {k: float(v) for k, v in ics.items()}
        row.update({f"{k[:-3]}_ratio": float(v / ics["oracle_ic"]) for k, v in ics.items() if k != "oracle_ic"})
        row.update(test_dates=float(test.size), fit_dates=float(fit_days.size), top_k=float(top_k))
        out[output_key(h)] = row
    return out
