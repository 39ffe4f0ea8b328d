"""A family of synthetic markets (``atft synth --world NAME``); the table is in bench/README.md, "Worlds".

Every world shares the generator's returns (market, sectors, GARCH, listings, missing cells),
features (unit-variance AR(1)) and time-varying strength ``a[t]``; they differ in the planted
1-day signal ``u[i, t]`` (``mu = c a[t] u``, c calibrated to ``oracle_ic``):

* ``sector`` - today's default, bit for bit: own linear part + same-sector mean of one peer
  feature (``atft.synth.generator``; this module is not used for it);
* ``supply-chain`` - the peer part runs through a hidden directed stock-to-stock graph (each stock
  has ``LINKS`` suppliers, about half of them outside its sector) over three peer features of
  persistence 0.2 / 0.6 / 0.95, the middle one with a one-day lead-lag (the supplier's feature
  yesterday); linked stocks share a return shock, so return correlation reveals part of the graph;
* ``nonlinear`` - the own part is a third linear, a third interactions ``x_a x_b``, a third a
  threshold ``max(x - TAU, 0)`` (standardized); the peer part as in ``sector``;
* ``regime`` - a hidden two-state Markov regime (stay probability ``REGIME_STAY``) decides which half
  of the informative features carries the own part; the peer part as in ``sector``;
* ``weak`` / ``strong`` - the ``sector`` structure at oracle IC@1d 0.05 / 0.15.

The world draws its own choices (graph, weights, regime path, link shocks) from
``np.random.default_rng([seed, WORLD_STREAM, world id])``, so the generator's own stream is unchanged.
The h-day truth is exact for the Gaussian AR(1) features: ``E[x_{t+k} | t] = phi^k x_t``, products of
independent features ``phi_a^k phi_b^k x_a x_b``, a threshold through the Gaussian conditional law,
the regime through the Markov transition; same approximations as ``atft.synth.oracle`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atft.errors import InputError
from atft.synth.oracle import expected_strength

WORLD_STREAM = 16  # second entry of the world's seed sequence (the issue number)
LINKS = 4  # hidden suppliers per stock (supply-chain)
IN_SECTOR = 0.5  # share of a stock's suppliers drawn inside its sector
LINK_SHOCK = 0.5  # sd of the shared link shock, as a fraction of idio_vol
PEER_PHI = (0.2, 0.6, 0.95)  # persistence of the supply-chain peer features
PEER_LAG = (0, 1, 0)  # days of lead-lag of each supply-chain peer feature
TAU = 0.5  # threshold of the nonlinear world
REGIME_STAY = 0.98  # daily probability of staying in the regime (mean length 50 days)


@dataclass(frozen=True)
class World:
    """One market of the family: a structure and the parameter overrides of its preset."""

    name: str
    structure: str  # sector | supply-chain | nonlinear | regime
    overrides: dict[str, Any] = field(default_factory=dict)
    about: str = ""


WORLDS: dict[str, World] = {w.name: w for w in (
    World("sector", "sector", {}, "today's default: own linear + same-sector mean of one peer feature"),
    World("supply-chain", "supply-chain", {"peer_features": 3},
          "hidden supplier graph (half outside the sector), 3 peer features phi 0.2/0.6/0.95, one lagged a day"),
    World("nonlinear", "nonlinear", {}, "own part 1/3 linear, 1/3 interactions, 1/3 threshold; sector peers"),
    World("regime", "regime", {}, "hidden 2-state regime picks which half of the own features carries the signal"),
    World("weak", "sector", {"oracle_ic": 0.05}, "sector structure at oracle IC@1d 0.05"),
    World("strong", "sector", {"oracle_ic": 0.15}, "sector structure at oracle IC@1d 0.15"),
)}


def world_rng(seed: int, name: str) -> np.random.Generator:
    """The world's own random stream (independent of the generator's)."""
    return np.random.default_rng([seed, WORLD_STREAM, list(WORLDS).index(name)])


@dataclass
class Planted:
    """The planted signal of a world: 1-day ``u`` [D, N], the expected future signal per lead day
    (``expect(k) -> (E[u_{t+k} | t], E[own part | t])``), extra return noise [D, N], sidecar facts."""

    u: np.ndarray
    expect: Callable[[int], tuple[np.ndarray, np.ndarray]]
    extra_noise: np.ndarray | None
    meta: dict[str, Any]


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF through erf (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7); numpy has no erf."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _relu_mean(m: np.ndarray, s: float) -> np.ndarray:
    """``E[max(X - TAU, 0)]`` for ``X ~ N(m, s^2)`` (s = 0: the value itself)."""
    d = m - TAU
    if s <= 0.0:
        return np.maximum(d, 0.0)
    return d * _norm_cdf(d / s) + s * np.exp(-0.5 * (d / s) ** 2) / np.sqrt(2 * np.pi)


_RELU_M = float(_relu_mean(np.zeros(1), 1.0)[0])  # E[max(X - TAU, 0)], X ~ N(0, 1)
_RELU_SD = float(np.sqrt((1 + TAU**2) * (1 - _norm_cdf(np.array([TAU]))[0]) - TAU * np.exp(-TAU**2 / 2)
                         / np.sqrt(2 * np.pi) - _RELU_M**2))


def hidden_graph(rng: np.random.Generator, sector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Suppliers of each stock: ``[N, LINKS]`` indices and unit-norm weights (no self-links).

    ``IN_SECTOR`` of the links (rounded per stock) go to same-sector stocks when the sector has
    enough, the rest to stocks of other sectors.
    """
    n = sector.size
    nbr = np.empty((n, LINKS), dtype=np.int64)
    for i in range(n):
        same = np.flatnonzero((sector == sector[i]) & (np.arange(n) != i))
        other = np.flatnonzero(sector != sector[i])
        k_in = min(int(rng.binomial(LINKS, IN_SECTOR)), same.size)
        nbr[i] = np.concatenate([rng.choice(same, k_in, replace=False),
                                 rng.choice(other, LINKS - k_in, replace=False)])
    wt = rng.uniform(0.5, 1.5, (n, LINKS))
    return nbr, wt / np.linalg.norm(wt, axis=1, keepdims=True)


def _graph_mean(x: np.ndarray, listed: np.ndarray, nbr: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``sum_j w_ij x_j`` over listed suppliers over ``sqrt(sum_j w_ij^2)``: unit variance.

    Shapes:
        x: ``[D, N]``; listed: ``[D, N]``; nbr, wt: ``[N, L]`` -> ``[D, N]``.
    """
    lf = listed[:, nbr].astype(np.float64)  # [D, N, L]
    num = np.einsum("dnl,nl->dn", x[:, nbr] * lf, wt)
    den = np.sqrt(np.einsum("dnl,nl->dn", lf, wt**2))
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def plant(world: World, rng: np.random.Generator, x: np.ndarray, listed: np.ndarray, sector: np.ndarray,
          inf_idx: np.ndarray, peer_idx: np.ndarray, phi: np.ndarray, sector_peer: np.ndarray | None,
          graph_share: float, idio_vol: float) -> Planted:
    """The planted signal of a non-``sector`` world.

    Args:
        world: the world (its structure is not ``sector``).
        rng: the world's stream (``world_rng``).
        x: features ``[D, N, F]``; listed ``[D, N]``; sector ``[N]``.
        inf_idx, peer_idx: informative / peer feature columns; phi: ``[F]`` AR(1) coefficients.
        sector_peer: the generator's same-sector peer sums ``[D, N, P]`` (nonlinear, regime).
        graph_share: s; idio_vol: the scale of the link shocks.
    """
    a_own, a_peer = np.sqrt(1.0 - graph_share), np.sqrt(graph_share)
    xi = x[:, :, inf_idx].astype(np.float64)  # [D, N, K]
    pi = phi[inf_idx]
    k_inf = inf_idx.size
    extra: np.ndarray | None = None
    meta: dict[str, Any] = {"world": world.name, "structure": world.structure}

    def sector_part(k: int) -> np.ndarray:  # E[same-sector peer part at t+k | t], as the generator's
        if sector_peer is None:
            raise ValueError(f"world {world.name} needs the same-sector peer sums")
        return sector_peer @ (phi[peer_idx] ** k / np.sqrt(sector_peer.shape[-1]))

    if world.structure == "supply-chain":
        w = rng.uniform(0.5, 1.5, k_inf) * rng.choice([-1.0, 1.0], k_inf)
        w /= np.linalg.norm(w)
        nbr, wt = hidden_graph(rng, sector)
        v = np.full(peer_idx.size, 1.0 / np.sqrt(peer_idx.size))
        lag = np.array([PEER_LAG[k % len(PEER_LAG)] for k in range(peer_idx.size)])
        now = np.stack([_graph_mean(x[:, :, f].astype(np.float64), listed, nbr, wt) for f in peer_idx], -1)
        before = np.zeros_like(now)
        before[1:] = now[:-1]  # the suppliers' features yesterday (the membership of yesterday)
        pp = phi[peer_idx]

        def expect(k: int) -> tuple[np.ndarray, np.ndarray]:
            own = xi @ (w * pi**k)
            if k == 0:  # the lagged features are known: yesterday's supplier values
                peer = now @ (v * (lag == 0)) + before @ (v * (lag == 1))
            else:  # E[x_{t+k-lag} | t] = phi^(k-lag) x_t
                peer = now @ (v * pp ** (k - lag))
            return a_own * own + a_peer * peer, a_own * own

        shocks = rng.standard_t(5.0, x.shape[:2]) / np.sqrt(5.0 / 3.0)  # [D, N] unit variance
        mean_link = np.einsum("dnl,nl->dn", shocks[:, nbr], wt)
        extra = LINK_SHOCK * idio_vol * (shocks + mean_link) / np.sqrt(2.0)
        same = sector[nbr] == sector[:, None]
        meta.update(links=LINKS, in_sector_link_share=float(same.mean()), peer_phi=[float(f) for f in pp],
                    peer_lag=[int(g) for g in lag], link_shock=LINK_SHOCK,
                    hidden_graph={"suppliers": nbr.tolist(), "weights": np.round(wt, 6).tolist()})
    elif world.structure == "nonlinear":
        if k_inf < 6:
            raise InputError(f"the nonlinear world needs informative >= 6 (got {k_inf}). Fix: raise data.synthetic.informative.")
        lin = np.arange(k_inf - 5)  # [0 .. K-6]: linear; then two pairs and one threshold
        pairs = [(k_inf - 5, k_inf - 4), (k_inf - 3, k_inf - 2)]
        thr = k_inf - 1
        w = rng.uniform(0.5, 1.5, lin.size) * rng.choice([-1.0, 1.0], lin.size)
        w /= np.linalg.norm(w)
        sign = rng.choice([-1.0, 1.0], 3)

        def expect(k: int) -> tuple[np.ndarray, np.ndarray]:
            lin_k = xi[..., lin] @ (w * pi[lin] ** k)
            inter = sum(pi[a] ** k * pi[b] ** k * xi[..., a] * xi[..., b] for a, b in pairs) / np.sqrt(2.0)
            s = float(np.sqrt(1.0 - pi[thr] ** (2 * k)))
            th = (_relu_mean(pi[thr] ** k * xi[..., thr], s) - _RELU_M) / _RELU_SD
            own = (sign[0] * lin_k + sign[1] * inter + sign[2] * th) / np.sqrt(3.0)
            return a_own * own + a_peer * sector_part(k), a_own * own

        meta.update(linear=[int(inf_idx[k]) for k in lin], pairs=[[int(inf_idx[a]), int(inf_idx[b])] for a, b in pairs],
                    threshold=int(inf_idx[thr]), tau=TAU, signs=sign.tolist())
    elif world.structure == "regime":
        half = max(1, k_inf // 2)
        wa = rng.uniform(0.5, 1.5, half) * rng.choice([-1.0, 1.0], half)
        wb = rng.uniform(0.5, 1.5, k_inf - half) * rng.choice([-1.0, 1.0], k_inf - half)
        wa, wb = wa / np.linalg.norm(wa), wb / np.linalg.norm(wb)
        d = x.shape[0]
        state = np.empty(d, dtype=np.int64)
        state[0] = rng.integers(2)
        flips: np.ndarray = np.asarray(rng.random(d) > REGIME_STAY)
        for t in range(1, d):
            state[t] = state[t - 1] ^ int(flips[t])
        in_a = (state == 0).astype(np.float64)[:, None]  # [D, 1]

        def expect(k: int) -> tuple[np.ndarray, np.ndarray]:
            p_a = 0.5 + (2 * REGIME_STAY - 1) ** k * (in_a - 0.5)  # P(regime A at t+k | t)
            own = p_a * (xi[..., :half] @ (wa * pi[:half] ** k)) + (1 - p_a) * (xi[..., half:] @ (wb * pi[half:] ** k))
            return a_own * own + a_peer * sector_part(k), a_own * own

        meta.update(regime_stay=REGIME_STAY, regime_a_share=float(in_a.mean()),
                    regime_switches=int((np.diff(state) != 0).sum()),
                    regime_features={"A": [int(f) for f in inf_idx[:half]], "B": [int(f) for f in inf_idx[half:]]})
    else:
        raise ValueError(f"world {world.name}: structure {world.structure} is planted by the generator")
    u = expect(0)[0]
    return Planted(u=u, expect=expect, extra_noise=extra, meta=meta)


def world_means(planted: Planted, c: float, z: np.ndarray, sigma_a: float, rho_a: float,
                horizons: tuple[int, ...]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """h-day truth ``c sum_{k<h} E[a_{t+k} | t] E[u_{t+k} | t]`` and its own-features-only part."""
    mu: dict[int, np.ndarray] = {}
    mu_own: dict[int, np.ndarray] = {}
    acc = np.zeros(planted.u.shape)
    acc_own = np.zeros(planted.u.shape)
    for k in range(max(horizons)):
        strength = expected_strength(z, sigma_a, rho_a, k)[:, None]
        full, own = planted.expect(k)
        acc += strength * full
        acc_own += strength * own
        if k + 1 in horizons:
            mu[k + 1], mu_own[k + 1] = c * acc.copy(), c * acc_own.copy()
    return mu, mu_own
