"""Date splits: chronological train | embargo | val | embargo | test, embargo >= max horizon."""

from __future__ import annotations

import numpy as np
import pytest

from atft.data.splits import Split, resolve_embargo, split_dates
from atft.errors import DataError, InputError


def test_exact_layout() -> None:
    s = split_dates(100, 0.2, 0.1, embargo=5)
    # n=100: test 10 -> [90, 100); val 20 -> [65, 85); embargo 5 before each; train 60 -> [0, 60)
    np.testing.assert_array_equal(s.train, np.arange(0, 60))
    np.testing.assert_array_equal(s.val, np.arange(65, 85))
    np.testing.assert_array_equal(s.test, np.arange(90, 100))
    assert s.embargo == 5 and s.sizes() == {"train": 60, "val": 20, "test": 10}


def test_warmup_drops_first_dates() -> None:
    s = split_dates(50, 0.2, 0.2, embargo=2, warmup=10)
    # usable 40: val 8, test 8, gaps 4 -> train 20 from date 10
    np.testing.assert_array_equal(s.train, np.arange(10, 30))
    np.testing.assert_array_equal(s.val, np.arange(32, 40))
    np.testing.assert_array_equal(s.test, np.arange(42, 50))


@pytest.mark.parametrize("num_dates,val_f,test_f,horizons", [
    (750, 0.15, 0.15, [1, 5, 10, 20]), (300, 0.1, 0.2, [1, 3]), (61, 0.2, 0.2, [7]), (500, 0.0, 0.2, [1, 20]),
])
def test_embargo_no_target_window_crosses_a_split(num_dates: int, val_f: float, test_f: float,
                                                  horizons: list[int]) -> None:
    e = resolve_embargo(-1, horizons)
    s = split_dates(num_dates, val_f, test_f, e)
    max_h = max(horizons)
    parts = [p for p in (s.train, s.val, s.test) if p.size]
    for earlier, later in zip(parts[:-1], parts[1:], strict=True):
        # target of date t covers t .. t + h: the last one must end before the next split starts
        assert earlier.max() + max_h < later.min()
        # and every target window of the earlier split avoids every date of the later split
        windows = earlier[:, None] + np.arange(max_h + 1)[None, :]
        assert not np.isin(windows, later).any()
    alld = np.concatenate(parts)
    assert np.all(np.diff(alld) > 0)  # chronological, disjoint


def test_embargo_of_zero_would_leak() -> None:
    # the property test above can fail: with embargo 0 the last train target reaches val dates
    s = split_dates(100, 0.2, 0.2, embargo=0)
    assert s.train.max() + 5 >= s.val.min()


def test_resolve_embargo() -> None:
    assert resolve_embargo(-1, [1, 5, 20]) == 20
    assert resolve_embargo(25, [1, 5, 20]) == 25
    with pytest.raises(DataError, match="shorter than the longest horizon 20"):
        resolve_embargo(10, [1, 5, 20])


def test_too_few_dates_names_the_numbers() -> None:
    with pytest.raises(DataError, match=r"30 dates - 0 warmup = 30 usable.*embargo 20") as exc:
        split_dates(30, 0.15, 0.15, embargo=20)
    assert "Fix:" in str(exc.value)
    with pytest.raises(DataError, match="outside"):
        split_dates(100, 1.2, 0.1, embargo=1)


def test_zero_fraction_gives_empty_split_without_gap() -> None:
    s = split_dates(40, 0.0, 0.25, embargo=3)
    assert s.val.size == 0
    np.testing.assert_array_equal(s.train, np.arange(0, 27))
    np.testing.assert_array_equal(s.test, np.arange(30, 40))


def test_get_rejects_unknown_name() -> None:
    s = split_dates(100, 0.2, 0.2, embargo=1)
    assert isinstance(s, Split) and s.get("val") is s.val
    with pytest.raises(InputError, match="unknown split 'valid'"):
        s.get("valid")
