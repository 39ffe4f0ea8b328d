"""Normalizer: winsor bounds + target scales fit on train dates only; per-date robust z-score."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest

from atft.data.normalize import Normalizer, nanmedian_last, nanquantile_columns, robust_zscore
from atft.data.panel import Panel
from atft.errors import DataError, ShapeError

K = 1.4826


def make_panel(features: np.ndarray, targets: np.ndarray | None = None) -> Panel:
    """A Panel around literal arrays (features [D, N, F], targets [D, N, H])."""
    d, n, f = features.shape
    if targets is None:
        targets = np.arange(d * n, dtype=np.float32).reshape(d, n, 1) % 7
    h = targets.shape[2]
    return Panel(features=features.astype(np.float32), targets=targets.astype(np.float32),
                 valid=~np.isnan(features).all(axis=2), returns=np.zeros((d, n), np.float32),
                 codes=[f"C{i}" for i in range(n)],
                 dates=[dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(d)],
                 feature_names=[f"x{i}" for i in range(f)], target_names=[f"feat_ret_{i + 1}d" for i in range(h)],
                 horizons=list(range(1, h + 1)), sector=np.full(n, -1), market=np.full(n, -1))


def test_robust_zscore_exact_values() -> None:
    x = np.array([1, 2, 3, 4, 100], np.float32).reshape(1, 5, 1)
    z = robust_zscore(x, clip=5.0)[0, :, 0]
    # median 3, MAD 1 -> scale 1.4826; the outlier is clipped to 5
    np.testing.assert_allclose(z, [-2 / K, -1 / K, 0, 1 / K, 5.0], rtol=1e-6)


def test_mad_zero_falls_back_to_std() -> None:
    x = np.array([1, 1, 1, 1, 3], np.float32).reshape(1, 5, 1)
    # MAD 0; population std of the values = 0.8 -> z = (x - median) / 0.8
    np.testing.assert_allclose(robust_zscore(x, 5.0)[0, :, 0], [0, 0, 0, 0, 2.5], rtol=1e-6)


def test_constant_single_and_missing_give_zero() -> None:
    x = np.array([[[2.0, 1.0], [2.0, np.nan], [2.0, np.nan]]], np.float32)  # [1, 3, 2]
    z = robust_zscore(x, 5.0)
    # feature 0 constant across stocks -> 0 (failure mode 4 is detected by the data checks);
    # feature 1 has a single value on the date -> 0; NaN -> 0
    np.testing.assert_array_equal(z, np.zeros((1, 3, 2), np.float32))


def test_zscore_is_per_date_and_per_feature() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 9, 3)).astype(np.float32)
    z = robust_zscore(x, 50.0)
    for d in (0, 3):
        for f in (0, 2):
            col = x[d, :, f].astype(np.float64)
            med = np.median(col)
            np.testing.assert_allclose(z[d, :, f], (col - med) / (K * np.median(np.abs(col - med))), rtol=1e-5)


def test_vectorized_helpers_agree_with_numpy() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(301, 5))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 2] = np.nan
    q = np.array([0.005, 0.25, 0.5, 0.995])
    got = nanquantile_columns(x, q)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanquantile(x, q, axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    med, cnt = nanmedian_last(x.T)
    with pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(med, np.nanmedian(x.T, axis=-1), equal_nan=True)
    np.testing.assert_array_equal(cnt, (~np.isnan(x)).sum(axis=0))
    one = np.array([[1.0], [np.nan], [4.0]])  # [M, 1]: x.T is contiguous, a view would be mutated
    np.testing.assert_allclose(nanquantile_columns(one, np.array([0.5])), [[2.5]])
    np.testing.assert_array_equal(one, [[1.0], [np.nan], [4.0]])


def test_winsor_bounds_are_train_quantiles_only() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(10, 50, 2))
    norm = Normalizer(winsor_quantile=0.1, clip=5.0, target_scaling="none").fit(make_panel(feats), np.arange(6))
    want = np.quantile(feats[:6].astype(np.float32).reshape(-1, 2), [0.1, 0.9], axis=0)
    np.testing.assert_allclose(norm.lower, want[0], rtol=1e-6)
    np.testing.assert_allclose(norm.upper, want[1], rtol=1e-6)


def test_fit_ignores_every_non_train_date() -> None:
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(12, 30, 3))
    tg = rng.normal(size=(12, 30, 2))
    train = np.arange(7)
    a = Normalizer(0.05).fit(make_panel(feats, tg), train).state_dict()
    feats2, tg2 = feats.copy(), tg.copy()
    feats2[7:] = 1e6 * rng.normal(size=feats2[7:].shape)  # val/test dates changed wildly
    tg2[7:] = 50.0 + tg2[7:]
    b = Normalizer(0.05).fit(make_panel(feats2, tg2), train).state_dict()
    assert a == b
    c = Normalizer(0.05).fit(make_panel(feats2, tg2), np.arange(8)).state_dict()  # the test can fail
    assert c != a


def test_same_transform_on_every_split() -> None:
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(8, 20, 3)) * np.array([1.0, 10.0, 100.0])
    p = make_panel(feats)
    norm = Normalizer(0.02, clip=3.0).fit(p, np.arange(4))
    out = norm.transform(p).features
    assert out.dtype == np.float32 and out.shape == (8, 20, 3) and np.abs(out).max() <= 3.0
    for d in (1, 6):  # one train date, one later date: the same function of that date alone
        np.testing.assert_array_equal(out[d], norm.transform_features(p.features[d:d + 1])[0])


def test_winsorization_applies_before_zscore() -> None:
    feats = np.array([[[0.0], [1.0], [2.0], [3.0]], [[0.0], [1.0], [2.0], [1000.0]]])
    p = make_panel(feats)
    norm = Normalizer(0.0, clip=100.0, target_scaling="none").fit(p, np.array([0]))
    # train bounds are [0, 3] -> on date 1 the 1000 becomes 3: values [0, 1, 2, 3], median 1.5, MAD 1
    np.testing.assert_allclose(norm.transform(p).features[1, :, 0], np.array([-1.5, -0.5, 0.5, 1.5]) / K,
                               rtol=1e-6)


def test_target_scaling_exact() -> None:
    tg = np.array([[[1.0], [2.0], [3.0]], [[2.0], [4.0], [np.nan]]])  # [2, 3, 1]
    p = make_panel(np.zeros((2, 3, 1)), tg)
    cs = Normalizer(target_scaling="cs_demean").fit(p, np.array([0, 1]))
    # demeaned: [-1, 0, 1], [-1, 1, nan]; std over train cells = sqrt(0.8)
    s = math.sqrt(0.8)
    np.testing.assert_allclose(cs.transform_targets(p.targets)[:, :, 0], [[-1 / s, 0, 1 / s], [-1 / s, 1 / s, np.nan]],
                               rtol=1e-6)
    sc = Normalizer(target_scaling="scale").fit(p, np.array([0, 1]))
    raw_std = np.std([1.0, 2.0, 3.0, 2.0, 4.0])
    np.testing.assert_allclose(sc.transform_targets(p.targets)[0, :, 0], np.array([1, 2, 3]) / raw_std, rtol=1e-6)
    np.testing.assert_allclose(cs.target_scale, [s], rtol=1e-6)  # training scale -> returns
    np.testing.assert_allclose(sc.target_scale, [raw_std], rtol=1e-6)
    no = Normalizer(target_scaling="none").fit(p, np.array([0, 1]))
    np.testing.assert_array_equal(no.target_scale, [1.0])
    out = no.transform(p)
    np.testing.assert_array_equal(out.targets, p.targets)
    assert out.raw_targets is p.targets  # raw kept for metrics


def test_state_dict_roundtrip_through_json() -> None:
    rng = np.random.default_rng(5)
    p = make_panel(rng.normal(size=(6, 15, 2)), rng.normal(size=(6, 15, 2)))
    a = Normalizer(0.01, 4.0, "scale").fit(p, np.arange(4))
    b = Normalizer()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.target_scaling == "scale" and b.clip == 4.0
    np.testing.assert_array_equal(a.transform(p).features, b.transform(p).features)
    np.testing.assert_array_equal(a.transform(p).targets, b.transform(p).targets)


def test_errors_name_the_fix() -> None:
    p = make_panel(np.ones((3, 4, 2)))
    with pytest.raises(DataError, match="before fit"):
        Normalizer().transform(p)
    norm = Normalizer(target_scaling="none").fit(p, np.arange(2))
    with pytest.raises(ShapeError, match="F=2 features, data has F=3"):
        norm.transform_features(np.ones((1, 4, 3), np.float32))
    const = make_panel(np.ones((3, 4, 2)), np.ones((3, 4, 1)))
    with pytest.raises(DataError, match=r"no spread.*horizons \[1\]"):
        Normalizer(target_scaling="cs_demean").fit(const, np.arange(2))
    with pytest.raises(DataError, match="target_scaling 'zscore'"):
        Normalizer(target_scaling="zscore")
    with pytest.raises(DataError, match="lacks"):
        Normalizer().load_state_dict({"clip": 1.0})
