"""Per (date, stock) row bits of one pass: distinct stocks, the legitimate tail, per-stock counts.

``StockDates.add`` sets, for every row, the bit of its (date, code) and that cell's
target-missing bits (one per target). From these two ``[G, N]`` bitmaps (G dates, N codes + 1,
code 0 = a null code) the statistics of ``atft.data.stats`` derive

* ``stocks``: distinct codes per date (rows minus stocks = duplicate rows);
* ``tail_counts``: per date, target missing / eligible counts outside each stock's legitimate
  tail (its last h rows, ``atft.data.schema.legit_tail``; ``last_rows`` finds them);
* ``stock_counts``: the same per stock, over the dates kept (``atft filter-data``).

With duplicate (Code, Date) rows "the last h rows of a stock" depend on the row order; the
caller then asks polars (``legit_tail``'s ordinal rank) instead.
"""

from __future__ import annotations

import numpy as np


class StockDates:
    """The ``[G, N]`` row and target-missing bitmaps (module docstring); capacity doubles."""

    def __init__(self, n_targets: int) -> None:
        # one target-missing bit per target; None (over 64 targets): no bits, the tail is left to polars
        self.bits = next((t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                          if 8 * np.dtype(t).itemsize >= n_targets), None)
        self.seen = np.zeros((0, 0), np.uint8)  # [G, N]: 1 where a (date, code) row exists
        self.tmiss = np.zeros((0, 0), self.bits or np.uint8)  # its target-missing bits

    def add(self, g: np.ndarray, code: np.ndarray, tmiss_rows: list[np.ndarray]) -> None:
        """Set the bits of one batch.

        Shapes:
            g ``[R]`` date ids, code ``[R]`` code ids (0: null code), tmiss_rows: per target the
            rows ``[q_t]`` where it is missing.
        """
        if not g.size:
            return
        n, m = int(g.max()) + 1, int(code.max()) + 1
        self.seen = _grow(self.seen, n, m)
        self.seen[g, code] = 1
        if self.bits is not None and tmiss_rows:
            self.tmiss = _grow(self.tmiss, n, m)
            bits = np.zeros(g.size, self.bits)
            for t, rows in enumerate(tmiss_rows):
                bits[rows] |= self.bits(1 << t)
            self.tmiss[g, code] = bits

    def stocks(self, n_dates: int) -> np.ndarray:
        """Distinct codes per date id ``[G]``."""
        seen = self.seen[:n_dates]
        out = np.zeros(n_dates, np.int64)
        out[: seen.shape[0]] = seen.sum(axis=1, dtype=np.int64)
        return out

    def tail_counts(self, dated: np.ndarray, horizons: list[int], rows: np.ndarray,
                    tmiss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per date, target missing and eligible counts outside the legitimate tail.

        Args:
            dated: the date ids in date order, without a null date (whose rows have no rank:
                they count as neither missing nor eligible).
            horizons: h of each target; rows ``[G]`` rows per date id; tmiss ``[G, T]`` missing
                counts per date id and target.

        Shapes:
            -> ``[G, T]`` each, date-id order.
        """
        nt = len(horizons)
        tm = np.zeros((rows.size, nt), np.int64)
        tr = np.zeros((rows.size, nt), np.int64)
        tm[dated], tr[dated] = tmiss[dated], rows[dated, None]
        gi, ci, rk = last_rows(self._seen(dated), max(horizons, default=0))
        bits = self._tmiss(dated)[gi, ci]
        for t, h in enumerate(horizons):
            sel = rk <= h
            tr[dated, t] -= np.bincount(gi[sel], minlength=dated.size)
            tm[dated, t] -= np.bincount(gi[sel], (bits[sel] >> bits.dtype.type(t)) & 1,
                                        minlength=dated.size).astype(np.int64)
        return tm, tr

    def stock_counts(self, dated: np.ndarray, keep: np.ndarray,
                     horizons: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per code: rows, target missing and eligible counts outside the tail, on the kept dates.

        Args:
            dated: the date ids in date order (no null date); keep ``[len(dated)]``: True on the
                dates counted (the tail is ranked over all of them).

        Shapes:
            -> rows ``[N]``, missing / eligible ``[N, T]`` (N codes + 1, code 0 = null code).
        """
        seen, tmiss = self._seen(dated), self._tmiss(dated)
        nt = len(horizons)
        rows = seen[keep].sum(axis=0, dtype=np.int64)
        tm = np.stack([((tmiss[keep] >> tmiss.dtype.type(t)) & 1).sum(axis=0, dtype=np.int64)
                       for t in range(nt)], 1) if nt else np.zeros((rows.size, 0), np.int64)
        tr = np.repeat(rows[:, None], nt, axis=1)
        gi, ci, rk = last_rows(seen, max(horizons, default=0))
        kept = keep[gi]
        bits = tmiss[gi, ci]
        for t, h in enumerate(horizons):
            sel = (rk <= h) & kept
            tr[:, t] -= np.bincount(ci[sel], minlength=rows.size)
            tm[:, t] -= np.bincount(ci[sel], (bits[sel] >> bits.dtype.type(t)) & 1,
                                    minlength=rows.size).astype(np.int64)
        return rows, tm, tr

    def _seen(self, dated: np.ndarray) -> np.ndarray:
        out = np.zeros((dated.size, self.seen.shape[1]), np.uint8)
        have = dated < self.seen.shape[0]
        out[have] = self.seen[dated[have]]
        return out

    def _tmiss(self, dated: np.ndarray) -> np.ndarray:
        out = np.zeros((dated.size, self.seen.shape[1]), self.tmiss.dtype)
        have = dated < self.tmiss.shape[0]
        out[have, : self.tmiss.shape[1]] = self.tmiss[dated[have]]
        return out


def last_rows(seen: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last ``h`` rows of every code: (date index, code, rank; 1 = the code's last row).

    Looks back from the last date in windows that grow 4x until every code has ``h`` rows in its
    window (or the window is the whole panel), so a complete panel reads only its last dates.

    Shapes:
        seen ``[G, N]`` (dates in order, codes; 1 where the row exists) -> three ``[k]`` arrays.
    """
    g_n = seen.shape[0]
    todo, w = np.arange(seen.shape[1]), max(h, 1)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(np.empty(0, np.int64),) * 3]
    while todo.size and h > 0:
        lo = max(0, g_n - w)
        sub = seen[lo:, todo]  # [w, codes]
        rank = np.cumsum(sub[::-1], axis=0, dtype=np.int32)[::-1]  # rows on or after this date
        done = (rank[0] >= h) | (lo == 0)
        gi, k = np.nonzero((sub != 0) & (rank <= h) & done)
        out.append((gi + lo, todo[k], rank[gi, k]))
        todo, w = todo[~done], 4 * w
    gi, ci, rk = (np.concatenate([o[i] for o in out]) for i in range(3))
    return gi, ci, rk


def _grow(a: np.ndarray, n: int, m: int) -> np.ndarray:
    """``a`` with room for ``n`` rows and ``m`` columns (capacity doubles), new entries 0."""
    if a.shape[0] >= n and a.shape[1] >= m:
        return a
    out = np.zeros((max(n, 2 * a.shape[0], 64) if a.shape[0] < n else a.shape[0],
                    max(m, 2 * a.shape[1], 64) if a.shape[1] < m else a.shape[1]), a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out
