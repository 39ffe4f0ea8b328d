"""Per-date metrics against independent references (scipy per date, plain numpy loops)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from scipy import stats

from atft.errors import InputError
from atft.eval.inference import ic_bootstrap_ci, paired_ic_tstat
from atft.eval.metrics import DailyIC, compute_metrics, long_short_returns, per_date_ic, sharpe

TOL = 1e-9


def random_panel(seed: int, n_dates: int = 30, ties: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled rows of ``n_dates`` dates with 3..60 stocks each, some NaN, a planted signal."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 61, size=n_dates)
    date_id = np.repeat(np.arange(100, 100 + n_dates), sizes)
    m = date_id.size
    pred = rng.normal(size=m)
    target = 0.3 * pred + rng.normal(size=m)
    if ties:
        pred, target = np.round(pred, 1), np.round(target, 1)
    pred[rng.random(m) < 0.05] = np.nan
    target[rng.random(m) < 0.05] = np.nan
    perm = rng.permutation(m)
    return pred[perm], target[perm], date_id[perm]


def reference_daily(pred: np.ndarray, target: np.ndarray, date_id: np.ndarray, min_stocks: int,
                    fn: object) -> tuple[list[int], list[float], int]:
    """Plain loop: per date, finite rows, ``fn(p, y)`` (scipy) when >= min_stocks rows."""
    dates, values, skipped = [], [], 0
    for d in sorted(set(date_id.tolist())):
        sel = (date_id == d) & np.isfinite(pred) & np.isfinite(target)
        if sel.sum() < min_stocks:
            skipped += 1
            continue
        dates.append(d)
        values.append(float(fn(pred[sel], target[sel])[0]))  # type: ignore[operator]
    return dates, values, skipped


@pytest.mark.parametrize("seed", [0, 1])
def test_pearson_ic_matches_scipy_per_date(seed: int) -> None:
    pred, target, date_id = random_panel(seed)
    got = per_date_ic(pred, target, date_id, min_stocks=20)
    dates, values, skipped = reference_daily(pred, target, date_id, 20, stats.pearsonr)
    assert got.dates.tolist() == dates
    np.testing.assert_allclose(got.values, values, rtol=0, atol=TOL)
    assert got.n_skipped == skipped and skipped > 0
    m = compute_metrics(pred, target, date_id, min_stocks=20)
    assert m["ic"] == pytest.approx(np.mean(values), abs=TOL)
    assert m["icir"] == pytest.approx(np.mean(values) / np.std(values, ddof=1), abs=TOL)
    assert m["n_dates"] == len(dates) and m["n_dates_skipped"] == skipped


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_ic_matches_scipy_spearman_with_ties(seed: int) -> None:
    pred, target, date_id = random_panel(seed, ties=True)
    got = per_date_ic(pred, target, date_id, min_stocks=20, method="spearman")
    dates, values, _ = reference_daily(pred, target, date_id, 20, stats.spearmanr)
    assert np.unique(pred[np.isfinite(pred)]).size < np.isfinite(pred).sum() / 2  # many ties
    assert got.dates.tolist() == dates
    np.testing.assert_allclose(got.values, values, rtol=0, atol=TOL)
    assert compute_metrics(pred, target, date_id)["rank_ic"] == pytest.approx(np.mean(values), abs=TOL)


def test_constant_prediction_gives_nan_never_a_number() -> None:
    # the target rises with row position, so position-tie-broken ranks of a constant
    # prediction would correlate perfectly with it (failure mode 7)
    n, days = 30, 4
    date_id = np.repeat(np.arange(days), n)
    target = np.tile(np.linspace(-0.05, 0.05, n), days)
    pred = np.full(n * days, 0.1)
    buggy = stats.pearsonr(np.argsort(np.argsort(pred[:n], kind="stable")), target[:n])[0]
    assert buggy > 0.99  # what the original pipeline reported as "IC"
    m = compute_metrics(pred, target, date_id)
    for key in ("ic", "rank_ic", "icir", "sharpe"):
        assert math.isnan(m[key]), key
    assert m["yhat_std"] == 0.0 and m["yhat_std_pooled"] == 0.0 and m["scale"] == 0.0
    assert m["n_dates"] == days and m["n_dates_nan_ic"] == days and m["n_dates_nan_rank_ic"] == days
    assert m["n_dates_ic"] == 0 and m["n_dates_sharpe"] == 0
    ls = long_short_returns(pred, target, date_id)
    assert ls.n_long.tolist() == [0] * days and np.isnan(ls.gross).all()


def test_date_with_constant_prediction_is_counted_not_zero() -> None:
    pred, target, date_id = random_panel(4, n_dates=6)
    first = np.unique(date_id)[0]
    pred = np.where(date_id == first, 0.25, pred)
    got = per_date_ic(pred, target, date_id, min_stocks=3)
    assert np.isnan(got.values[0]) and got.n_nan == 1
    m = compute_metrics(pred, target, date_id, min_stocks=3)
    assert m["n_dates_nan_ic"] == 1 and m["n_dates_ic"] == got.n_dates - 1
    assert m["ic"] == pytest.approx(np.mean(got.values[1:]), abs=TOL)


def test_min_stocks_skips_and_counts_dates() -> None:
    date_id = np.array([1, 1, 1, 2, 2, 2, 3, 3])
    pred = np.array([1.0, 2.0, 3.0, 1.0, np.nan, 3.0, 1.0, 2.0])
    target = np.array([1.0, 3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0])
    got = per_date_ic(pred, target, date_id, min_stocks=3)
    assert got.dates.tolist() == [1] and got.n_skipped == 2
    assert got.values.tolist() == pytest.approx([0.5], abs=TOL)  # pearson([1,2,3],[1,3,2])
    assert got.n_stocks.tolist() == [3]
    two = per_date_ic(pred, target, date_id, min_stocks=2)
    assert two.dates.tolist() == [1, 2, 3] and two.n_skipped == 0
    assert two.values.tolist() == pytest.approx([0.5, 1.0, -1.0], abs=TOL)


def test_literal_std_scale_and_hit_rate() -> None:
    date_id = np.array([7, 7, 7, 7])
    pred = np.array([1.0, -1.0, 0.0, 2.0])
    target = np.array([1.0, 1.0, -1.0, 0.0])
    m = compute_metrics(pred, target, date_id, min_stocks=2)
    sd_p, sd_y = math.sqrt(1.25), math.sqrt(0.6875)  # ddof=0
    assert m["yhat_std"] == pytest.approx(sd_p, abs=TOL)
    assert m["yhat_std_pooled"] == pytest.approx(sd_p, abs=TOL)
    assert m["scale"] == pytest.approx(sd_p / sd_y, abs=TOL)
    # zeros take no side: only rows 0 (hit) and 1 (miss) count
    assert m["hit_rate"] == 0.5 and m["n_hit_rows"] == 2


def test_std_and_scale_match_numpy_loop() -> None:
    pred, target, date_id = random_panel(5)
    m = compute_metrics(pred, target, date_id, min_stocks=20)
    sds, ratios, pooled = [], [], []
    for d in np.unique(date_id):
        sel = (date_id == d) & np.isfinite(pred) & np.isfinite(target)
        if sel.sum() >= 20:
            sds.append(np.std(pred[sel]))
            ratios.append(np.std(pred[sel]) / np.std(target[sel]))
            pooled.append(pred[sel])
    assert m["yhat_std"] == pytest.approx(np.mean(sds), abs=TOL)
    assert m["scale"] == pytest.approx(np.mean(ratios), abs=TOL)
    assert m["yhat_std_pooled"] == pytest.approx(np.std(np.concatenate(pooled)), abs=TOL)


def test_long_short_and_sharpe_match_numpy_loop() -> None:
    pred, target, date_id = random_panel(6, n_dates=40)
    ls = long_short_returns(pred, target, date_id, min_stocks=20)
    ref = []
    for d in np.unique(date_id):
        sel = (date_id == d) & np.isfinite(pred) & np.isfinite(target)
        if sel.sum() < 20:
            continue
        p, y = pred[sel], target[sel]
        k = len(p) // 5
        order = np.argsort(p)
        ref.append(y[order[-k:]].mean() - y[order[:k]].mean())
    np.testing.assert_allclose(ls.gross, ref, rtol=0, atol=TOL)
    expected = np.mean(ref) / np.std(ref, ddof=1) * np.sqrt(252)
    assert expected > 0  # planted signal: no sign flip
    assert sharpe(ls.gross) == pytest.approx(expected, abs=TOL)
    assert compute_metrics(pred, target, date_id)["sharpe"] == pytest.approx(expected, abs=TOL)
    flipped = compute_metrics(-pred, target, date_id)["sharpe"]
    assert flipped == pytest.approx(-expected, abs=TOL)


def test_long_short_tie_rule_literal() -> None:
    # n = 10 -> k = 2; bottom iff average rank <= 2.5, top iff >= 8.5
    y = np.arange(10, dtype=float)
    d = np.zeros(10, dtype=int)
    # three tied lowest (mean rank 2): all three short; two tied highest (9.5): both long
    pred = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 6], dtype=float)
    ls = long_short_returns(pred, y, d, min_stocks=2)
    assert ls.n_short.tolist() == [3] and ls.n_long.tolist() == [2]
    assert ls.gross.tolist() == [8.5 - 1.0]
    # four tied lowest (mean rank 2.5): on the boundary, all four short
    pred4 = np.array([0, 0, 0, 0, 2, 3, 4, 5, 6, 7], dtype=float)
    ls4 = long_short_returns(pred4, y, d, min_stocks=2)
    assert ls4.n_short.tolist() == [4] and ls4.gross.tolist() == [8.5 - 1.5]
    # five tied lowest (mean rank 3): the run's middle is outside the bucket -> no short leg
    pred5 = np.array([0, 0, 0, 0, 0, 3, 4, 5, 6, 7], dtype=float)
    ls5 = long_short_returns(pred5, y, d, min_stocks=2)
    assert ls5.n_short.tolist() == [0] and np.isnan(ls5.gross).all()
    # row order never matters
    perm = np.array([9, 3, 0, 7, 1, 8, 2, 6, 4, 5])
    assert long_short_returns(pred[perm], y[perm], d, min_stocks=2).gross.tolist() == [7.5]


def test_turnover_and_net_returns() -> None:
    codes = np.array(list("abcdefghij") * 2)
    d = np.repeat([1, 2], 10)
    y = np.tile(np.linspace(-0.01, 0.01, 10), 2)
    p_day1 = np.arange(10, dtype=float)  # long i, j; short a, b
    p_day2 = np.array([1, 0, 2, 3, 4, 5, 6, 7, 9, 8], dtype=float)  # same legs, reordered inside
    p_day3 = np.array([9, 8, 2, 3, 4, 5, 6, 7, 0, 1], dtype=float)  # legs swapped
    ls = long_short_returns(np.concatenate([p_day1, p_day2]), y, d, codes=codes, min_stocks=2,
                            cost=0.001)
    assert ls.turnover.tolist() == [2.0, 0.0]  # enter from cash, then hold
    np.testing.assert_allclose(ls.net, ls.gross - 0.001 * np.array([2.0, 0.0]), rtol=0, atol=1e-15)
    sw = long_short_returns(np.concatenate([p_day1, p_day3]), y, d, codes=codes, min_stocks=2)
    assert sw.turnover.tolist() == [2.0, 4.0]  # each stock goes +0.5 -> -0.5 or back
    m = compute_metrics(np.concatenate([p_day1, p_day3]), y, d, min_stocks=2, codes=codes, cost=0.01)
    assert m["turnover"] == 3.0
    assert m["sharpe_net"] != m["sharpe"]


def test_bootstrap_ci_contains_mean_is_seeded_and_narrows() -> None:
    rng = np.random.default_rng(7)
    short = 0.05 + 0.1 * rng.normal(size=60)
    long = 0.05 + 0.1 * rng.normal(size=2000)
    lo, hi = ic_bootstrap_ci(short, seed=3)
    assert lo < short.mean() < hi
    assert ic_bootstrap_ci(short, seed=3) == (lo, hi)
    assert ic_bootstrap_ci(short, seed=4) != (lo, hi)
    lo2, hi2 = ic_bootstrap_ci(long, seed=3)
    assert lo2 < long.mean() < hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)
    with_nan = np.concatenate([short, [np.nan]])
    assert ic_bootstrap_ci(with_nan, seed=3) == (lo, hi)  # NaN days dropped
    daily = DailyIC(np.arange(60), short, np.full(60, 30), 0)
    assert ic_bootstrap_ci(daily, seed=3) == (lo, hi)
    assert all(math.isnan(v) for v in ic_bootstrap_ci(np.array([0.1]), seed=0))


def test_paired_ic_tstat_matches_scipy_on_common_dates() -> None:
    rng = np.random.default_rng(8)
    a = DailyIC(np.arange(0, 50), 0.05 + 0.1 * rng.normal(size=50), np.full(50, 30), 0)
    b_vals = 0.02 + 0.1 * rng.normal(size=40)
    b_vals[5] = np.nan
    b = DailyIC(np.arange(20, 60), b_vals, np.full(40, 30), 0)
    got = paired_ic_tstat(a, b)
    av, bv = a.values[20:50], b.values[:30]
    ok = np.isfinite(bv)
    ref = stats.ttest_rel(av[ok], bv[ok])
    assert got.n_dates == 29
    assert got.t == pytest.approx(float(ref.statistic), abs=TOL)
    assert got.mean_diff == pytest.approx(float(np.mean(av[ok] - bv[ok])), abs=TOL)
    arr = paired_ic_tstat(av, bv)
    assert arr.t == pytest.approx(got.t, abs=TOL)


def test_date_objects_work_like_ints() -> None:
    pred, target, date_id = random_panel(9, n_dates=8)
    as_dates = np.array([dt.date(2024, 1, 1) + dt.timedelta(days=int(x)) for x in date_id],
                        dtype=object)
    a = compute_metrics(pred, target, date_id, min_stocks=5)
    b = compute_metrics(pred, target, as_dates, min_stocks=5)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]) or (math.isnan(a[k]) and math.isnan(b[k])), k


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: per_date_ic([1.0, 2.0], [1.0], [0, 0]), "same length"),
        (lambda: per_date_ic(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2))), "flat array"),
        (lambda: per_date_ic([1.0, 2.0], [1.0, 2.0], [0, 0], method="kendall"), "pearson"),
        (lambda: per_date_ic([1.0, 2.0], [1.0, 2.0], [0, 0], min_stocks=1), "min_stocks"),
        (lambda: compute_metrics([1.0, 2.0], [1.0, 2.0], [0, 0], cost=0.001), "codes"),
        (lambda: long_short_returns([1.0, 2.0], [1.0, 2.0], [0, 0], codes=["a"]), "one code"),
    ],
)
def test_bad_input_raises_input_error_with_fix(call: object, match: str) -> None:
    with pytest.raises(InputError, match=match) as e:
        call()  # type: ignore[operator]
    assert "Fix" in str(e.value)


def test_empty_input_gives_nan_and_zero_counts() -> None:
    m = compute_metrics(np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
    assert m["n_dates"] == 0 and m["n_rows"] == 0
    assert math.isnan(m["ic"]) and math.isnan(m["rank_ic"]) and math.isnan(m["sharpe"])
