"""Per-date correlation graph: ``GraphBuilder.build`` against a per-pair Python/numpy loop.

    nice -n 10 python bench/bench_graph.py [--quick] [--repeats R]

Returns window: lookback L=60 dates x N stocks from a sector factor model (12 sectors, market
factor, 2 % of cells NaN), so the graph has the edges a real panel gives. ``GraphBuilder``
(``min_obs`` 40, ``top_k`` 20, threshold 0.3: the default ``GraphConfig``) is timed at N = 500,
2,000, 4,000 (``--quick``: 500, 1,000, 2,000) with torch at 1 thread and at the default thread
count, best of ``--repeats`` interleaved runs (default 5; quick 2). The scaling exponent is the log-log slope of
time on N.

The configured default ``GraphConfig`` (lookback 250, market-model residual, rank by rho,
threshold 0.1, ``sector_k`` same-sector peers) is timed too, on a window of its own lookback at 1
thread, and beside it the same without sector peers (``sector_k=0``): their same-run ratio is the
cost of the sector edges.

Baseline: the straightforward implementation, a Python loop over the N(N-1)/2 pairs with
``np.corrcoef`` on each pair's common observations, then the same top-k / threshold / union
rule, run at N=100 (``--quick``: 60). Its edge set is checked equal to ``GraphBuilder``'s there.
Its time at larger N is EXTRAPOLATED by (N / N_loop)^2 (the pair count) and labelled so.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import be_nice, best_of, loglog_slope, machine_line, md_table  # noqa: E402

from atft.config import GraphConfig  # noqa: E402
from atft.graph.builder import GraphBuilder  # noqa: E402

LOOKBACK = 60


def window(num_stocks: int, lookback: int = LOOKBACK, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A returns window from a market + sector factor model, 2 % NaN.

    Shapes:
        -> returns ``[L, N]`` float32, sector ``[N]`` int64, market ``[N]`` int64.
    """
    rng = np.random.default_rng(seed)
    sector = rng.integers(0, 12, num_stocks)
    market = rng.integers(0, 3, num_stocks)
    f = rng.normal(0, 0.01, (lookback, 1))
    g = rng.normal(0, 0.01, (lookback, 12))[:, sector]  # [L, N]
    r = (f + g + rng.normal(0, 0.018, (lookback, num_stocks))).astype(np.float32)
    r[rng.random(r.shape) < 0.02] = np.nan
    return r, sector.astype(np.int64), market.astype(np.int64)


def loop_graph(returns: np.ndarray, min_obs: int, top_k: int, threshold: float) -> set[tuple[int, int]]:
    """The per-pair loop: pairwise-complete Pearson per pair, top-k by |rho| per stock, union.

    Shapes:
        returns: ``[L, N]`` -> set of directed edges (both directions of every kept pair).
    """
    n = returns.shape[1]
    obs = ~np.isnan(returns)
    score = np.full((n, n), -1.0)
    for i in range(n):
        for j in range(i + 1, n):
            both = obs[:, i] & obs[:, j]
            if both.sum() < min_obs:
                continue
            xi, xj = returns[both, i].astype(np.float64), returns[both, j].astype(np.float64)
            if xi.std() == 0 or xj.std() == 0:
                continue
            rho = abs(np.corrcoef(xi, xj)[0, 1])
            if rho > threshold:
                score[i, j] = score[j, i] = rho
    edges: set[tuple[int, int]] = set()
    k = min(top_k, n - 1)
    for i in range(n):
        for j in np.argsort(-score[i], kind="stable")[:k]:
            if score[i, j] > threshold:
                edges.add((i, int(j)))
                edges.add((int(j), i))
    return edges


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 500, 1,000, 2,000; loop at N=60")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; quick 2)")
    args = p.parse_args()
    be_nice(10)
    sizes = [500, 1000, 2000] if args.quick else [500, 2000, 4000]
    args.repeats = args.repeats or (2 if args.quick else 5)
    n_loop = 60 if args.quick else 100
    default_threads = torch.get_num_threads()
    print(machine_line())
    # num_threads=0: this benchmark sets torch's threads itself (the builder would pin 1 otherwise)
    gb = GraphBuilder(lookback=LOOKBACK, min_obs=40, top_k=20, threshold=0.3, residual="none", rank_by="abs",
                      num_threads=0, sector_k=0)  # raw |rho|, as the loop
    # the configured default (GraphConfig: lookback 250, market-model residual, positive rho, 0.1)
    gcfg = GraphConfig(num_threads=0)
    gb_res = GraphBuilder.from_config(gcfg)
    gb_nosec = GraphBuilder.from_config(replace(gcfg, sector_k=0))

    r, sec, mkt = window(n_loop)
    t0 = time.perf_counter()
    ref = loop_graph(r, gb.min_obs, gb.top_k, gb.threshold)
    loop_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    ei, _ = gb.build(r, sec, mkt)
    same = ref == set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    (vec_small,) = best_of([lambda: gb.build(r, sec, mkt)], args.repeats)
    torch.set_num_threads(default_threads)
    print(f"loop at N={n_loop}: {loop_s:.3f} s, GraphBuilder (1 thread) {vec_small * 1e3:.2f} ms "
          f"(x{loop_s / vec_small:.0f}); same edge set: {same} ({len(ref)} directed edges)")

    rows, times = [], {1: [], default_threads: []}
    for n in sizes:
        r, sec, mkt = window(n)
        r_cfg, sec_cfg, mkt_cfg = window(n, lookback=gcfg.lookback)
        fns = []
        def run_res(r: np.ndarray = r_cfg, sec: np.ndarray = sec_cfg, mkt: np.ndarray = mkt_cfg,
                    b: GraphBuilder = gb_res) -> None:
            torch.set_num_threads(1)
            b.build(r, sec, mkt)
        run_nosec = partial(run_res, b=gb_nosec)
        for th in times:
            def run(th: int = th, r: np.ndarray = r, sec: np.ndarray = sec, mkt: np.ndarray = mkt) -> None:
                torch.set_num_threads(th)
                gb.build(r, sec, mkt)
            fns.append(run)
        *best, res_s, nosec_s = best_of([*fns, run_res, run_nosec], args.repeats)
        torch.set_num_threads(default_threads)
        edges = gb.build(r, sec, mkt)[0].shape[1]
        for th, b in zip(times, best, strict=True):
            times[th].append(b)
        extrap = loop_s * (n / n_loop) ** 2
        rows.append((n, edges, *best, res_s, f"{nosec_s:.4f} (x{res_s / nosec_s:.2f})", extrap, extrap / min(best)))
    print()
    hdr = ["N", "edges", "GraphBuilder s (1 thread)", f"GraphBuilder s ({default_threads} threads)",
           f"configured default (L={gcfg.lookback}, residual={gcfg.residual}, rank_by={gcfg.rank_by}, "
           f"sector_k={gcfg.sector_k}) s (1 thread)", "same, sector_k=0 s (configured / it)",
           f"per-pair loop s (EXTRAPOLATED from N={n_loop} by N^2)", "loop (extrapolated) / best GraphBuilder"]
    print(md_table(hdr, rows))
    for th, ts in times.items():
        print(f"scaling exponent (log-log slope of time on N, {th} thread(s)): {loglog_slope(sizes, ts):.2f}")
    print(f"goal: N=4,000 under 0.5 s -> {'met' if sizes[-1] == 4000 and min(t[-1] for t in times.values()) < 0.5 else 'see table'}")


if __name__ == "__main__":
    main()
