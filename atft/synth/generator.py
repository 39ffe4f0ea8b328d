"""The synthetic panel with a known oracle IC (``atft synth``); see docs/synthetic.md.

Daily return of stock i from day t to t+1, stored as ``feat_ret_1d`` on row (i, t):

    r[i,t] = beta_i f[t] + g[sector(i), t] + mu[i,t] + sigma[i,t] eps[i,t]

* market factor f (``market_vol``), sector shocks g (``sector_vol`` per sector), both with
  unit-variance Student-t(``t_dof``) shocks; betas ~ N(1, ``beta_sd``^2) clipped to ``beta_clip``;
* GARCH(1,1) idiosyncratic volatility (``garch_alpha``, ``garch_beta``) around a per-stock
  log-normal level (median ``idio_vol``), Student-t shocks;
* mu[i,t] = c a[t] u[i,t], planted from what is known at t (see ``atft.synth.oracle``); c is solved
  by bisection so that the 1-day oracle IC on this draw's realized noise equals ``oracle_ic``.

Choices made here (documented contract of the file):

* ``sector_vol`` defaults to 1.0%/day, not the 0.6% of the first sketch: with 1.8% idiosyncratic
  volatility a 60-day correlation window put the top neighbour in the same sector for only ~50%
  of stocks at 0.6%, ~80% at 1.0%. The GAT needs sectors recoverable to use the peer signal.
* ``sectors`` defaults to 33 (the TOPIX-33 classification of the J-Quants panel), not 12: the
  planted peer part is a same-sector mean, nearly constant within a sector, so a day's graph gain
  in IC rides on one realized shock per sector. With 12 sectors the sd of the daily IC
  difference between the planted truth and the own-features-only truth is ~0.088, with 33
  ~0.062; the truth's paired t on the 181-date test split (``bench/bench_quality.py --power``,
  panel seeds 0-7) went from 4.18 2.56 4.78 2.03 2.34 3.73 7.04 2.98 (mean 3.70) to
  5.20 3.48 6.78 2.79 2.59 3.81 5.88 4.36 (mean 4.36): a graph ablation has the power to show.
* Listings: ``late_listing_share`` of the stocks list on a day drawn in (0, days/2]; a
  ``delisting_share`` delist after at least ``min_life_days`` (capped at half the panel for short
  panels). Rows exist for every business day of a stock's listed life and for no other day.
* Missing data: ``missing_share`` of the feature cells of existing rows are null (no row is
  dropped); the truth uses the unobserved true values.
* Targets ``feat_ret_{h}d`` (``atft.horizons.target_column``): compounded return from t to t+h,
  null in the last h rows of each stock (at the end of the panel and before a delisting).
* a[t] (the signal strength) is not a column: it is common to all stocks on a date, so it does
  not change a per-date IC; it only makes the daily IC vary (ICIR ~0.65-0.75 at the defaults).
* Returns are clipped to +-``max_abs_return`` (the count is in the sidecar; it is ~0 at defaults).
* Rows are sorted by (Code, Date); codes are distinct 4-digit strings, dates are Mon-Fri business
  days from ``start_date``; ``sector`` is a String ("S03") so it is never read as a feature.

``generate`` returns the training frame, the truth frame (Code, Date, ``mu_horizon_{h}d`` and
the own-features-only ``mu_own_horizon_{h}d``) and the sidecar metadata (all parameters, seed,
shapes, feature roles, the oracle IC per horizon, the no-graph ceiling, ICIR); ``atft.synth.cache``
writes them. The same seed gives identical frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import polars as pl

from atft.config import SynthConfig
from atft.data.schema import min_dates
from atft.errors import InputError
from atft.horizons import DEFAULT_TEMPLATE, target_column, truth_column
from atft.progress import Ticker
from atft.synth.ceilings import observable_ceiling
from atft.synth.oracle import calibrate_scale, horizon_means, oracle_table
from atft.synth.worlds import PEER_PHI, WORLDS, plant, world_means, world_rng

log = logging.getLogger("atft.synth")

GENERATOR_VERSION = 2  # bump when the same parameters would give a different panel (2: float32 draws)
DEFAULT_HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
_CODE_RANGE = (1300, 10000)  # 4-digit codes "1300".."9999"


@dataclass(frozen=True)
class SynthParams:
    """Every parameter of the generator (the first eight mirror ``data.synthetic``)."""

    stocks: int = 300  # N
    days: int = 1250  # D business days
    features: int = 32  # F feature columns: informative + peer + noise
    informative: int = 8  # features carrying the own part of the signal
    sectors: int = 33  # sectors (block correlation, peer groups; TOPIX-33)
    graph_share: float = 0.4  # s: share of the signal variance from same-sector peers
    oracle_ic: float = 0.10  # target oracle IC at 1 day (sets c)
    seed: int = 0  # one numpy Generator from this seed
    peer_features: int = 1  # features whose same-sector peer sum is the graph part
    market_vol: float = 0.01  # daily sd of the market factor
    sector_vol: float = 0.01  # daily sd of each sector shock
    beta_sd: float = 0.3  # betas ~ N(1, beta_sd^2)
    beta_clip: tuple[float, float] = (0.2, 2.0)  # bounds of the betas
    idio_vol: float = 0.018  # median long-run idiosyncratic daily vol
    idio_vol_dispersion: float = 0.3  # sd of log long-run idiosyncratic vol across stocks
    garch_alpha: float = 0.08  # GARCH(1,1) ARCH coefficient
    garch_beta: float = 0.90  # GARCH(1,1) persistence coefficient
    t_dof: float = 5.0  # Student-t degrees of freedom of every shock (unit variance)
    feature_phi: tuple[float, float] = (0.4, 0.6)  # AR(1) coefficients drawn uniformly in this range
    strength_sigma: float = 1.0  # sd of log a[t] (sets the day-to-day spread of the IC: ICIR ~0.65-0.75)
    strength_rho: float = 0.9  # AR(1) coefficient of log a[t]
    late_listing_share: float = 0.15  # stocks listing after the first day
    delisting_share: float = 0.15  # stocks delisting before the last day
    min_life_days: int = 252  # a delisted stock lived at least this long (<= days/2)
    missing_share: float = 0.01  # share of feature cells set to null
    max_abs_return: float = 0.5  # daily returns are clipped to +-this
    min_stocks: int = 20  # dates with fewer valid stocks are skipped in the oracle IC
    start_date: str = "2019-01-01"  # first business day on or after this date

    @classmethod
    def from_config(cls, sc: SynthConfig, **overrides: Any) -> SynthParams:
        """Params from ``cfg.data.synthetic``; keyword overrides that are None are ignored."""
        base = {f.name: getattr(sc, f.name) for f in fields(SynthConfig)}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self, horizons: tuple[int, ...]) -> None:
        """Raise one InputError naming the bad parameter and the fix."""
        bad: list[str] = []
        if not 2 * self.sectors <= self.stocks <= _CODE_RANGE[1] - _CODE_RANGE[0]:
            bad.append(f"stocks={self.stocks} must be in [2*sectors={2 * self.sectors}, 8700]")
        if self.sectors < 1:
            bad.append(f"sectors={self.sectors} must be >= 1")
        if self.days < min_dates(horizons):
            bad.append(f"days={self.days} must be >= 2*max(horizons)+20={min_dates(horizons)}")
        if self.informative < 1 or self.peer_features < 1:
            bad.append("informative and peer_features must be >= 1")
        if self.features < self.informative + self.peer_features:
            bad.append(f"features={self.features} < informative+peer_features="
                       f"{self.informative + self.peer_features}")
        if not 0.0 <= self.graph_share < 1.0:
            bad.append(f"graph_share={self.graph_share} must be in [0, 1)")
        if self.garch_alpha < 0 or self.garch_beta < 0 or self.garch_alpha + self.garch_beta >= 1:
            bad.append("garch_alpha, garch_beta must be >= 0 with a sum < 1")
        if self.t_dof <= 2:
            bad.append(f"t_dof={self.t_dof} must be > 2 (finite variance)")
        if not -1 < self.feature_phi[0] <= self.feature_phi[1] < 1 or not 0 <= self.strength_rho < 1:
            bad.append("feature_phi must be an increasing pair in (-1, 1), strength_rho in [0, 1)")
        shares = (self.late_listing_share, self.delisting_share, self.missing_share)
        if any(not 0 <= v < 1 for v in shares) or self.min_life_days < 1 or self.max_abs_return <= 0:
            bad.append("listing/missing shares must be in [0, 1), min_life_days >= 1, max_abs_return > 0")
        if bad:
            raise InputError("invalid synthetic panel parameters: " + "; ".join(bad) +
                             ". Fix: change data.synthetic (or the atft synth options) accordingly.")


@dataclass
class SynthResult:
    """A generated panel in memory: the training frame, the truth frame and the sidecar dict."""

    panel: pl.DataFrame  # Code, Date, sector, features (Float32), targets (Float32)
    truth: pl.DataFrame  # Code, Date, mu_horizon_{h}d, mu_own_horizon_{h}d (Float64)
    meta: dict[str, Any]  # parameters, shapes, roles, oracle IC per horizon


def _student_t(rng: np.random.Generator, dof: float, size: Any) -> np.ndarray:
    """Unit-variance Student-t draws."""
    return rng.standard_t(dof, size) / np.sqrt(dof / (dof - 2.0))


def _listing(rng: np.random.Generator, p: SynthParams) -> tuple[np.ndarray, np.ndarray]:
    """First listed day and end (exclusive) per stock. Shapes: ``[N]``, ``[N]`` int64."""
    n, d = p.stocks, p.days
    start = np.zeros(n, dtype=np.int64)
    end = np.full(n, d, dtype=np.int64)
    late = rng.choice(n, int(round(p.late_listing_share * n)), replace=False)
    start[late] = rng.integers(1, d // 2 + 1, late.size)
    life = min(p.min_life_days, d // 2)
    room = (d - 1) - (start + life)  # end may be drawn in [start + life, d - 1)
    eligible = np.flatnonzero(room > 0)
    k = min(int(round(p.delisting_share * n)), eligible.size)
    dl = np.sort(rng.choice(eligible, k, replace=False))
    end[dl] = start[dl] + life + (rng.random(k) * room[dl]).astype(np.int64)
    return start, end


def _ar1(rng: np.random.Generator, phi: np.ndarray, shape: tuple[int, ...],
         dtype: type[np.floating[Any]] = np.float64, ticker: Ticker | None = None) -> np.ndarray:
    """Stationary unit-variance AR(1) along axis 0 with per-series coefficients ``phi``.

    The feature panel is drawn in float32 (it is stored as float32 anyway): at 4,000 stocks x
    1,200 days x 82 features a float64 copy alone is 3.1 GiB.

    Shapes:
        phi: broadcastable to ``shape[1:]``; returns ``shape`` of ``dtype``.
    """
    out = rng.standard_normal(shape, dtype=dtype)  # the shocks, overwritten in place by the recursion
    phi = np.asarray(phi, dtype=dtype)
    scale = np.sqrt(1.0 - phi**2).astype(dtype)
    for t in range(1, shape[0]):  # the recursion is sequential in time only
        out[t] *= scale
        out[t] += phi * out[t - 1]
        if ticker is not None:
            ticker.tick(lambda s, t=t: f"synth: features, day {t + 1}/{shape[0]} ({s:.0f} s)")
    return out


def _noise_returns(rng: np.random.Generator, p: SynthParams, sector: np.ndarray) -> np.ndarray:
    """Market + sector + GARCH idiosyncratic part of the daily returns. Shapes: -> ``[D, N]``."""
    d, n = p.days, p.stocks
    beta = np.clip(rng.normal(1.0, p.beta_sd, n), *p.beta_clip)
    level = p.idio_vol * np.exp(p.idio_vol_dispersion * rng.standard_normal(n))  # [N]
    f = p.market_vol * _student_t(rng, p.t_dof, d)  # [D]
    g = p.sector_vol * _student_t(rng, p.t_dof, (d, p.sectors))  # [D, G]
    z = _student_t(rng, p.t_dof, (d, n))
    omega = level**2 * (1.0 - p.garch_alpha - p.garch_beta)
    var = level**2
    idio = np.empty((d, n))
    for t in range(d):
        idio[t] = np.sqrt(var) * z[t]
        var = omega + p.garch_alpha * idio[t] ** 2 + p.garch_beta * var
    return beta[None, :] * f[:, None] + g[:, sector] + idio


def _peer_sums(x: np.ndarray, listed: np.ndarray, sector: np.ndarray, sectors: int) -> np.ndarray:
    """Same-sector peer sum (listed peers, excluding i) over sqrt(peer count): unit variance.

    Shapes:
        x: ``[D, N, P]``; listed: ``[D, N]`` bool; sector: ``[N]`` -> ``[D, N, P]``.
    """
    lf = listed.astype(np.float64)
    onehot = np.eye(sectors)[sector]  # [N, G]
    sums = np.einsum("dnp,ng->dgp", x * lf[..., None], onehot)  # [D, G, P]
    counts = lf @ onehot  # [D, G]
    excl = sums[:, sector, :] - x * lf[..., None]  # [D, N, P]
    n_peers = counts[:, sector] - lf  # [D, N]
    return excl / np.sqrt(np.maximum(n_peers, 1.0))[..., None]


def _forward_returns(r: np.ndarray, end: np.ndarray, listed: np.ndarray,
                     horizons: tuple[int, ...]) -> np.ndarray:
    """Compounded return from t to t+h; NaN unless the row exists and t+h is a listed day.

    Shapes:
        r: ``[D, N]`` daily return t -> t+1; end: ``[N]``; listed: ``[D, N]`` -> ``[D, N, H]``.
    """
    d = r.shape[0]
    cum = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(np.log1p(r), axis=0)])  # [D+1, N]
    t = np.arange(d)[:, None]
    out = np.full((*r.shape, len(horizons)), np.nan)
    for k, h in enumerate(horizons):
        ok = listed & (t + h <= end[None, :] - 1)  # [D, N]
        stop = np.minimum(t + h, d)
        val = np.expm1(np.take_along_axis(cum, np.broadcast_to(stop, r.shape), 0) - cum[:-1])
        out[..., k] = np.where(ok, val, np.nan)
    return out


def ticker_elapsed(ticker: Ticker) -> float:
    return time.perf_counter() - ticker.start


def generate(params: SynthParams, horizons: tuple[int, ...] | list[int] = DEFAULT_HORIZONS,
             template: str = DEFAULT_TEMPLATE, *, world: str = "sector",
             log_every_s: float = 30.0) -> SynthResult:
    """Generate the panel, its truth and its sidecar metadata in memory.

    Args:
        params: generator parameters (``params.seed`` seeds the one numpy Generator).
        horizons: target horizons in trading days.
        template: target column template (``atft.horizons.target_column``).
        world: the market's structure (``atft.synth.worlds.WORLDS``; its preset overrides are
            applied by the caller, ``world_params``): ``sector`` is the generator below, bit for bit.
        log_every_s: a progress line (log INFO) at most this often in the long loops, besides one
            line per stage (a 3,000-stock panel takes minutes).

    Raises:
        InputError: invalid parameters (named, with the fix).
    """
    hz = tuple(int(h) for h in horizons)
    p = params
    p.validate(hz)
    if world not in WORLDS:
        raise InputError(f"unknown world {world!r}. Fix: use one of {', '.join(WORLDS)}.")
    spec = WORLDS[world]
    rng = np.random.default_rng(p.seed)
    n, d, nf, g = p.stocks, p.days, p.features, p.sectors
    codes = np.sort(rng.choice(np.arange(*_CODE_RANGE), n, replace=False)).astype(str)
    sector = rng.permutation(np.arange(n) % g)  # balanced sectors, random membership
    start, end = _listing(rng, p)
    t_idx = np.arange(d)[:, None]
    listed = (t_idx >= start[None, :]) & (t_idx < end[None, :])  # [D, N]

    phi = rng.uniform(*p.feature_phi, nf)  # [F]
    roles = rng.permutation(nf)
    inf_idx = np.sort(roles[: p.informative])
    peer_idx = np.sort(roles[p.informative: p.informative + p.peer_features])
    noise_idx = np.sort(roles[p.informative + p.peer_features:])
    if spec.structure == "supply-chain":  # peer features of set persistence (the draws are unchanged)
        phi[peer_idx] = [PEER_PHI[k % len(PEER_PHI)] for k in range(peer_idx.size)]
    w = rng.uniform(0.5, 1.5, p.informative) * rng.choice([-1.0, 1.0], p.informative)
    w /= np.linalg.norm(w)  # own part has unit variance
    v = np.full(p.peer_features, 1.0 / np.sqrt(p.peer_features))  # peer weights, unit variance
    ticker = Ticker(log, log_every_s)
    log.info("synth: %d stocks x %d days x %d features (seed %d)", n, d, nf, p.seed)
    x = _ar1(rng, phi[None, :], (d, n, nf), np.float32, ticker)  # [D, N, F] float32
    z = _ar1(rng, np.array(p.strength_rho), (d,))  # [D] log-strength driver
    a = np.exp(p.strength_sigma * z - 0.5 * p.strength_sigma**2)  # [D] > 0, mean 1
    log.info("synth: features drawn (%.0f s); market, sector and GARCH returns", ticker_elapsed(ticker))
    noise = _noise_returns(rng, p, sector)  # [D, N]

    peer = _peer_sums(x[:, :, peer_idx], listed, sector, g)  # [D, N, P]
    planted = None
    if spec.structure == "sector":
        u = np.sqrt(1 - p.graph_share) * (x[:, :, inf_idx] @ w) + np.sqrt(p.graph_share) * (peer @ v)
    else:
        planted = plant(spec, world_rng(p.seed, world), x, listed, sector, inf_idx, peer_idx, phi, peer,
                        p.graph_share, p.idio_vol)
        u = planted.u
        noise = noise if planted.extra_noise is None else noise + planted.extra_noise
    valid1 = listed & (t_idx + 1 <= end[None, :] - 1)
    log.info("synth: returns drawn (%.0f s); calibrating the signal to oracle IC %g", ticker_elapsed(ticker), p.oracle_ic)
    c = calibrate_scale(u, a, noise, valid1, p.oracle_ic, p.min_stocks)
    raw = c * a[:, None] * u + noise
    r = np.clip(raw, -p.max_abs_return, p.max_abs_return)
    targets = _forward_returns(r, end, listed, hz).astype(np.float32)  # [D, N, H]
    if planted is None:
        mu, mu_own = horizon_means(c, z, p.strength_sigma, p.strength_rho, x[:, :, inf_idx], w,
                                   phi[inf_idx], peer, v, phi[peer_idx], p.graph_share, hz)
    else:
        mu, mu_own = world_means(planted, c, z, p.strength_sigma, p.strength_rho, hz)

    oracle = oracle_table(mu, mu_own, targets, hz, p.min_stocks)
    ceiling = observable_ceiling(x, listed, sector, targets, mu, mu_own, hz, min_stocks=p.min_stocks)
    log.info("synth: targets and oracle done (%.0f s); building the frame", ticker_elapsed(ticker))

    ii, tt = np.nonzero(listed.T)  # rows in (Code, Date) order: codes are sorted equal-width
    names = [f"x{k:03d}" for k in range(nf)]
    dates = np.busday_offset(np.datetime64(p.start_date, "D"), np.arange(d), roll="forward")
    keys = pl.DataFrame({"Code": pl.Series(codes[ii], dtype=pl.String),
                         "Date": pl.Series(dates[tt], dtype=pl.Date),
                         "sector": pl.Series([f"S{s:02d}" for s in range(g)]).gather(sector[ii])})
    tcols = [target_column(h, template) for h in hz]
    # column by column: never an [R, F] copy of the features or a float64 [R, F] random draw
    columns, n_missing = [], 0
    for k, name in enumerate(names):
        col = x[tt, ii, k]  # [R] float32
        miss = rng.random(col.size, dtype=np.float32) < p.missing_share
        n_missing += int(miss.sum())
        col[miss] = np.nan
        columns.append(pl.Series(name, col).fill_nan(None))
    columns += [pl.Series(name, targets[tt, ii, j]).fill_nan(None) for j, name in enumerate(tcols)]
    panel = keys.hstack(columns)
    truth = keys.drop("sector").with_columns(
        *[pl.Series(truth_column(h), mu[h][tt, ii]) for h in hz],
        *[pl.Series(truth_column(h, True), mu_own[h][tt, ii]) for h in hz],
    )
    meta = {
        "generator": "atft.synth", "version": GENERATOR_VERSION,
        "world": world, "world_about": spec.about,
        "world_facts": planted.meta if planted is not None else {"world": world, "structure": "sector"},
        "params": asdict(p), "seed": p.seed, "horizons": list(hz), "target_template": template,
        "shape": {"stocks": n, "days": d, "features": nf, "rows": panel.height},
        "columns": {"code": "Code", "date": "Date", "sector": "sector",
                    "features": names, "targets": tcols},
        "feature_roles": {"informative": [names[k] for k in inf_idx],
                          "peer": [names[k] for k in peer_idx],
                          "noise": [names[k] for k in noise_idx]},
        "own_weights": {names[k]: float(wk) for k, wk in zip(inf_idx, w, strict=True)},
        "feature_phi": {nm: float(ph) for nm, ph in zip(names, phi, strict=True)},
        "signal_scale_c": c,
        "counts": {"late_listings": int((start > 0).sum()), "delistings": int((end < d).sum()),
                   "missing_feature_cells": n_missing,
                   "clipped_returns": int((np.abs(raw) > p.max_abs_return)[listed].sum())},
        "oracle_min_stocks": p.min_stocks,
        "oracle": oracle,  # per output key: ic, ic_std, icir, n_dates, no_graph_ic, no_graph_icir, ...
        "oracle_ic": {key: o["ic"] for key, o in oracle.items()},  # flat views of the same numbers
        "no_graph_ic": {key: o["no_graph_ic"] for key, o in oracle.items()},
        "ceilings": ceiling,  # per key: oracle / own-only oracle / observable linear on the last 15 % of dates
    }
    return SynthResult(panel=panel, truth=truth, meta=meta)
