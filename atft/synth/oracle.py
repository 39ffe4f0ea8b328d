"""The oracle of the synthetic panel: planted h-day conditional means and their per-date IC.

The generator (``atft.synth.generator``) plants a 1-day conditional mean

    mu[i, t] = c * a[t] * u[i, t],   u = sqrt(1 - s) * own[i, t] + sqrt(s) * peer[i, t]

with ``own = sum_k w_k x_k`` (informative AR(1) features, ``||w|| = 1``), ``peer = sum_p v_p P_p``
(``||v|| = 1``) where ``P_p[i, t]`` is the sum of peer feature p over i's listed same-sector peers
(i excluded) divided by sqrt(peer count), so unit variance and independent of i's own features;
``a[t] = exp(sigma_a z_t - sigma_a^2 / 2)`` with ``z`` a unit-variance AR(1) (rho_a): a log-AR(1)
strength, always > 0, mean 1 (an AR(1) in logs rather than a clipped AR(1), so that
``E[a_{t+j} | t]`` stays exact).

The h-day truth is the expected sum of the daily means over t..t+h-1 given what is known at t:

    mu_h[i, t] = c * sum_{j<h} E[a_{t+j} | t]
                   * (sqrt(1-s) sum_k w_k phi_k^j x_k[i,t] + sqrt(s) sum_p v_p phi_p^j P_p[i,t])

``E[a_{t+j} | t] = exp(sigma_a rho_a^j z_t - sigma_a^2 rho_a^(2j) / 2)`` is exact (a is independent
of the features, so the expectation of the product factorizes). Approximations, documented:
(1) the peer set of i is held fixed at its date-t membership (listings / delistings within the
h days are ignored); (2) the target is a compounded return while mu_h sums daily means (the
cross terms are O(mu * r), negligible at these scales); (3) return clipping is ignored.

The oracle IC per horizon is the mean over dates of the per-date Pearson(mu_h, r_h) over the
stocks with a valid target that date (dates with fewer than ``min_stocks`` are skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import polars as pl

from atft.errors import InputError
from atft.eval.inference import ic_summary, paired_ic_tstat
from atft.eval.metrics import DailyIC, per_date_ic
from atft.horizons import Horizons, output_key


def daily_ic(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, min_stocks: int = 20) -> DailyIC:
    """Per-date Pearson IC of dense ``[D, N]`` arrays over the cells where ``mask`` holds
    (``atft.eval.metrics.per_date_ic`` on the masked rows; dates are the row indices 0..D-1).

    Shapes:
        pred, target, mask: ``[D, N]`` -> ``DailyIC`` over the dates with >= ``min_stocks`` cells.
    """
    rows = np.nonzero(mask)
    return per_date_ic(pred[rows], target[rows], rows[0], min_stocks=min_stocks)


def oracle_table(mu: dict[int, np.ndarray], mu_own: dict[int, np.ndarray], targets: np.ndarray,
                 horizons: Sequence[int], min_stocks: int = 20) -> dict[str, dict[str, float]]:
    """Oracle IC summary per horizon, keyed by output key (``horizon_{h}d``).

    Each entry: ``ic``, ``ic_std``, ``icir``, ``n_dates`` of Pearson(mu_h, r_h) per date;
    ``no_graph_ic`` / ``no_graph_icir`` of the own-features-only mean; ``graph_share_of_oracle``
    = 1 - no_graph_ic / ic. A target counts where it is finite.

    Shapes:
        mu, mu_own: horizon -> ``[D, N]``; targets: ``[D, N, H]`` in ``horizons`` order.
    """
    out: dict[str, dict[str, float]] = {}
    for k, h in enumerate(horizons):
        y = targets[..., k].astype(np.float64)
        ok = np.isfinite(y)
        full = ic_summary(daily_ic(mu[h], y, ok, min_stocks).values)
        own = ic_summary(daily_ic(mu_own[h], y, ok, min_stocks).values)
        out[output_key(h)] = {**full, "no_graph_ic": own["ic"], "no_graph_icir": own["icir"],
                              "graph_share_of_oracle": 1.0 - own["ic"] / full["ic"]}
    return out


def expected_strength(z: np.ndarray, sigma_a: float, rho_a: float, j: int) -> np.ndarray:
    """``E[a_{t+j} | z_t]`` for the log-AR(1) strength ``a = exp(sigma_a z - sigma_a^2 / 2)``.

    Shapes:
        z: ``[D]`` -> ``[D]``.
    """
    rj = rho_a ** j
    return np.exp(sigma_a * rj * z - 0.5 * sigma_a**2 * rj**2)


def horizon_means(
    c: float,
    z: np.ndarray,
    sigma_a: float,
    rho_a: float,
    informative: np.ndarray,
    weights: np.ndarray,
    phi_informative: np.ndarray,
    peer: np.ndarray,
    peer_weights: np.ndarray,
    phi_peer: np.ndarray,
    graph_share: float,
    horizons: Sequence[int],
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Planted h-day conditional means, with and without the graph (peer) part.

    Returns:
        ``(mu, mu_own)``: dicts horizon -> ``[D, N]`` float64. ``mu_own`` drops the peer term
        (the best predictor from i's own features: the no-graph ceiling).

    Shapes:
        z: ``[D]``; informative: ``[D, N, K]``; weights, phi_informative: ``[K]``;
        peer: ``[D, N, P]`` scaled peer sums; peer_weights, phi_peer: ``[P]``.
    """
    a_own = np.sqrt(1.0 - graph_share)
    a_peer = np.sqrt(graph_share)
    mu: dict[int, np.ndarray] = {}
    mu_own: dict[int, np.ndarray] = {}
    acc = np.zeros(peer.shape[:2])  # [D, N]
    acc_own = np.zeros(peer.shape[:2])
    wanted = set(int(h) for h in horizons)
    for j in range(max(wanted)):  # loop over lead days only; each step is a [D, N, K] @ [K]
        strength = expected_strength(z, sigma_a, rho_a, j)[:, None]  # [D, 1]
        own_j = informative @ (weights * phi_informative**j)  # [D, N]
        term_own = a_own * own_j
        acc_own += strength * term_own
        peer_j = peer @ (peer_weights * phi_peer**j)  # [D, N]
        acc += strength * (term_own + a_peer * peer_j)
        if j + 1 in wanted:
            mu[j + 1] = c * acc.copy()
            mu_own[j + 1] = c * acc_own.copy()
    return mu, mu_own


def calibrate_scale(u: np.ndarray, a: np.ndarray, noise: np.ndarray, mask: np.ndarray,
                    target_ic: float, min_stocks: int = 20, iters: int = 40) -> float:
    """The signal scale c whose 1-day oracle IC on this draw equals ``target_ic``.

    The realized 1-day return is ``c a[t] u + noise`` and the noise does not depend on c, so the
    mean per-date Pearson(u, c a u + noise) is non-decreasing in c (Cauchy-Schwarz); c is found
    by bisection on log c. Cost: ``iters`` vectorized passes over ``[D, N]``.

    Raises:
        InputError: ``target_ic`` outside (0, 1) or not reachable on this draw.

    Shapes:
        u, noise, mask: ``[D, N]``; a: ``[D]``.
    """
    if not 0.0 < target_ic < 1.0:
        raise InputError(f"oracle_ic={target_ic} is not in (0, 1). Fix: set data.synthetic.oracle_ic "
                         "to a correlation such as 0.10.")

    def ic(c: float) -> float:
        return daily_ic(u, c * a[:, None] * u + noise, mask, min_stocks).mean

    lo, hi = -12.0, 2.0  # log10 c: from no signal to signal >> noise
    ic_hi = ic(10.0**hi)
    if not np.isfinite(ic_hi) or ic_hi < target_ic:
        raise InputError(f"oracle_ic={target_ic} cannot be reached (max {ic_hi:.3f}) with fewer than "
                         f"{min_stocks} stocks on most dates. Fix: use more stocks or a lower oracle_ic.")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if ic(10.0**mid) < target_ic:
            lo = mid
        else:
            hi = mid
    return float(10.0 ** (0.5 * (lo + hi)))


def oracle_on_predictions(predictions: pl.DataFrame, truth_file: str | os.PathLike[str],
                          horizons: Horizons, min_stocks: int = 20) -> dict[str, dict[str, float]]:
    """The oracle on exactly the rows of a predictions frame (same dates, same stocks).

    A model's IC on a split is compared with the oracle's IC on the same (Code, Date) rows and
    the same realized targets, so the period noise common to both cancels (the full-panel
    oracle of the sidecar differs from a split's by about sd(daily IC) / sqrt(dates)).

    Args:
        predictions: polars DataFrame with Code, Date, the target columns and
            ``pred_horizon_{h}d`` (``predictions_{split}.parquet`` of a run).
        truth_file: the ``*.truth.parquet`` of the synthetic panel.
        horizons: ``atft.horizons.Horizons``.

    Returns:
        per horizon key: ``oracle_ic``, ``model_ic`` (same rows), ``ratio``, ``n_dates``, and the
        paired per-date t-stat of (model - oracle) IC.
    """
    frame = predictions
    truth = pl.read_parquet(str(truth_file))
    joined = frame.join(truth, on=["Code", "Date"], how="left")
    date_id = joined["Date"].to_physical().to_numpy()
    out: dict[str, dict[str, float]] = {}
    for key, tcol, pcol, mcol in zip(horizons.keys, horizons.targets, horizons.pred_columns,
                                     horizons.truth_columns(), strict=True):
        y = joined[tcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        mu = joined[mcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        p = joined[pcol].fill_null(float("nan")).to_numpy().astype(np.float64)
        o = per_date_ic(mu, y, date_id, min_stocks=min_stocks)
        m = per_date_ic(p, y, date_id, min_stocks=min_stocks)
        t = paired_ic_tstat(m, o)
        out[key] = {"oracle_ic": float(np.nanmean(o.values)), "model_ic": float(np.nanmean(m.values)),
                    "ratio": float(np.nanmean(m.values) / np.nanmean(o.values)),
                    "n_dates": float(t.n_dates), "tstat_model_minus_oracle": float(t.t)}
    return out
