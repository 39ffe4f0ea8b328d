"""Chronological date splits with an embargo: train | embargo | val | embargo | test.

Splits are by DATE (every stock shares them), never by row index per stock (failure mode 12).
With embargo ``e >= max horizon``, the target window ``t .. t + h`` of every date t in an earlier
split ends before the first date of the next split: ``last_train + max_h < first_val``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atft.config import Config
from atft.data.schema import min_dates
from atft.errors import DataError, InputError
from atft.horizons import Horizons

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Split:
    """Date indices of each split (into ``Panel.dates``), ascending.

    Shapes:
        train, val, test: ``[D_split]`` int64.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    embargo: int
    warmup: int = 0

    def get(self, name: str) -> np.ndarray:
        """The date indices of split ``name`` ("train" | "val" | "test")."""
        if name not in SPLIT_NAMES:
            raise InputError(f"unknown split '{name}'. Fix: use one of {list(SPLIT_NAMES)}.")
        out: np.ndarray = getattr(self, name)
        return out

    def sizes(self) -> dict[str, int]:
        """Number of dates per split."""
        return {n: int(self.get(n).size) for n in SPLIT_NAMES}


def resolve_embargo(embargo_days: int, horizons: list[int] | tuple[int, ...]) -> int:
    """``data.embargo_days`` as a number of dates: -1 = the longest horizon.

    Raises:
        DataError: an embargo shorter than the longest horizon (targets would cross splits).
    """
    max_h = max(horizons)
    if embargo_days == -1:
        return int(max_h)
    if embargo_days < max_h:
        raise DataError(f"embargo of {embargo_days} dates is shorter than the longest horizon {max_h}: "
                        f"train targets would reach validation dates. Fix: set data.embargo_days=-1 or >= {max_h}.")
    return int(embargo_days)


def split_dates(num_dates: int, val_fraction: float, test_fraction: float, embargo: int,
                warmup: int = 0) -> Split:
    """Split ``num_dates`` chronological dates into train | embargo | val | embargo | test.

    The usable dates are ``warmup .. num_dates - 1`` (``n`` of them). Val and test get
    ``round(fraction * n)`` dates each (the last ones); ``embargo`` dates are dropped before each
    non-empty later split; train gets the rest. A fraction of 0 gives an empty split (and no
    embargo in front of it).

    Args:
        num_dates: D, number of dates of the panel.
        val_fraction: share of the usable dates for validation, in [0, 1).
        test_fraction: share of the usable dates for test, in [0, 1).
        embargo: dates dropped between consecutive splits; use ``resolve_embargo`` (>= max horizon).
        warmup: first dates dropped (e.g. those without a full sequence window).

    Raises:
        DataError: negative inputs, fractions out of range, or too few dates for the request
            (the message names the numbers).
    """
    if embargo < 0 or warmup < 0:
        raise DataError(f"embargo ({embargo}) and warmup ({warmup}) must be >= 0. Fix: pass non-negative values.")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise DataError(f"data.{name}={f} is outside [0, 1). Fix: use a share such as 0.15.")
    n = num_dates - warmup
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    gaps = embargo * ((n_val > 0) + (n_test > 0))
    n_train = n - n_val - n_test - gaps
    too_few = n_train < 1 or (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1)
    if too_few:
        raise DataError(
            f"too few dates to split: {num_dates} dates - {warmup} warmup = {n} usable; val {n_val} "
            f"(fraction {val_fraction}), test {n_test} (fraction {test_fraction}), embargo {embargo} x "
            f"{(n_val > 0) + (n_test > 0)} gaps leaves {n_train} train dates (need >= 1 in each requested "
            "split). Fix: use a longer panel, smaller val/test fractions, or a shorter sequence_length.")
    train = np.arange(warmup, warmup + n_train, dtype=np.int64)
    start_val = warmup + n_train + (embargo if n_val else 0)
    val = np.arange(start_val, start_val + n_val, dtype=np.int64)
    start_test = num_dates - n_test
    test = np.arange(start_test, num_dates, dtype=np.int64)
    return Split(train=train, val=val, test=test, embargo=int(embargo), warmup=int(warmup))


def check_enough_stocks(valid: np.ndarray, split: Split, min_stocks: int) -> None:
    """Every split has dates with at least ``data.min_stocks`` stocks (else a run takes no step and
    reports NaN metrics).

    Args:
        valid: ``[D, N]`` bool, a row exists (``Panel.valid``).

    Raises:
        DataError: naming the split, the most stocks any of its dates has, and the minimum.
    """
    counts = valid.sum(axis=1)  # [D] stocks per date
    for name in SPLIT_NAMES:
        idx = split.get(name)
        if idx.size and int((counts[idx] >= min_stocks).sum()) == 0:
            raise DataError(f"no {name} date has data.min_stocks={min_stocks} stocks (the most on any {name} date: "
                            f"{int(counts[idx].max())}; {valid.shape[1]} stocks in all). Fix: use a panel with "
                            f"more stocks or lower data.min_stocks (>= 2).")


def split_panel(cfg: Config, valid: np.ndarray) -> Split:
    """THE split of a panel for ``cfg``: embargo ``data.embargo_days`` (-1 = the longest horizon),
    the first ``max(sequence_length - 1, graph.min_obs)`` dates dropped whether or not the graph
    is on (GAT on/off runs see the same dates), and every split with a date of ``data.min_stocks``.

    Args:
        valid: ``[D, N]`` bool, a row exists (``Panel.valid``).

    Raises:
        DataError: too few dates or stocks, named with the numbers and the fix.
    """
    embargo, warmup = _embargo_warmup(cfg)
    split = split_dates(valid.shape[0], float(cfg.data.val_fraction), float(cfg.data.test_fraction), embargo,
                        warmup=warmup)
    check_enough_stocks(valid, split, int(cfg.data.min_stocks))
    return split


def _embargo_warmup(cfg: Config) -> tuple[int, int]:
    d = cfg.data
    embargo = resolve_embargo(int(d.embargo_days), Horizons.from_config(cfg).horizons)
    return embargo, max(int(d.sequence_length) - 1, int(cfg.graph.min_obs))


def min_panel_dates(cfg: Config) -> int:
    """THE fewest dates a panel needs for ``cfg``: the smallest D for which ``split_panel``'s date
    split exists (warm-up, val / test fractions, embargoes), and at least ``schema.min_dates``
    (every horizon's targets outside its tail). ``atft check-data`` (``dataset_size``) and
    ``atft train`` apply the same number."""
    embargo, warmup = _embargo_warmup(cfg)
    start = max(min_dates(Horizons.from_config(cfg).horizons), warmup + 1)
    for n in range(start, start + 1_000_000):
        try:
            split_dates(n, float(cfg.data.val_fraction), float(cfg.data.test_fraction), embargo, warmup=warmup)
        except DataError:
            continue
        return n
    raise DataError("no panel length splits with these data.val_fraction / data.test_fraction. Fix: lower them.")
