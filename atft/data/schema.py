"""Which columns of a dataset are ids, features and targets: THE column-role rule.

Every reader of a dataset (the panel loader, the dataset statistics behind ``atft check-data``,
``atft filter-data``) selects columns here, so a column is a feature in all of them or in none.

Definitions (design.md section 7):

* missing = ``is_null() | is_nan()`` (polars ``null_count`` ignores float NaN);
* ids: ``data.code_col``, ``data.date_col``, ``data.sector_col``, ``data.market_col``;
* targets: the configured ``data.target_template`` per horizon (``atft.horizons``);
* features: ``data.features`` if given, else every numeric column that is not an id, not a
  configured target, not another horizon under the target template and not in ``data.exclude``;
  a feature that looks like a forward return (``atft.horizons.looks_like_target``) is leakage,
  never silently used;
* legitimate tail of target h: the last h rows of each stock (no h-day target can exist there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from atft.config import Config
from atft.errors import DataError
from atft.horizons import Horizons, looks_like_target


def missing(name: str, dtype: pl.DataType) -> pl.Expr:
    """Boolean expression: the cell is null, or NaN for float columns."""
    col = pl.col(name)
    return col.is_null() | col.is_nan() if dtype.is_float() else col.is_null()


def legit_tail(h: int, code_col: str = "Code", date_col: str = "Date") -> pl.Expr:
    """True on each stock's rows of its last ``h`` dates (no h-day target can exist there). Dates
    are ranked densely: a duplicated (Code, Date) row does not push a real row out of the tail
    (duplicates are ``duplicate_rows``' finding, not a missing target)."""
    return pl.col(date_col).rank("dense", descending=True).over(code_col) <= h


def min_dates(horizons: Sequence[int]) -> int:
    """THE minimum length of a usable panel: ``2 x the longest horizon + 20`` dates, so that every
    horizon's targets exist outside its tail and a split has dates to train on."""
    return 2 * max(horizons) + 20


def target_columns(schema: pl.Schema, cfg: Config) -> list[str]:
    """Configured target columns present in ``schema``, in horizon order."""
    return [t for t in Horizons.from_config(cfg).targets if t in schema]


def _template_rx(horizons: Horizons) -> re.Pattern[str]:
    return re.compile("^" + re.escape(horizons.template).replace(re.escape("{h}"), r"\d+") + "$")


def is_target_like(column: str, horizons: Horizons) -> bool:
    """A configured target, another horizon under the template, or a forward-return-like name."""
    return column in horizons.targets or bool(_template_rx(horizons).match(column)) or looks_like_target(column)


def selection_problems(schema: pl.Schema, cfg: Config) -> tuple[list[str], list[str]]:
    """(feature columns, problems) of THE selection rule; problems are full sentences with a fix.

    The ``feature_columns`` check reports the problems as a FAIL row; ``feature_columns`` raises them.
    """
    d, hz = cfg.data, Horizons.from_config(cfg)
    ids = {d.code_col, d.date_col, d.sector_col, d.market_col}
    if d.features:
        feats = list(d.features)
        absent = [f for f in feats if f not in schema]
        bad_type = [f for f in feats if f in schema and not schema[f].is_numeric()]
        leaky = [f for f in feats if is_target_like(f, hz)]
        problems = []
        if absent:
            problems.append(f"explicit features {absent} are not in the data. Fix: correct data.features "
                            "or leave it [] to use every numeric non-target column.")
        if bad_type:
            problems.append(f"explicit features {bad_type} are not numeric. Fix: drop them from data.features.")
        if leaky:
            problems.append(f"explicit features {leaky} are targets / forward returns (leakage). "
                            "Fix: remove them from data.features.")
        return feats, problems
    rx = _template_rx(hz)
    cand = [n for n, t in schema.items() if t.is_numeric() and n not in ids and n not in d.exclude]
    feats = [c for c in cand if c not in hz.targets and not rx.match(c)]
    leaky = [c for c in feats if looks_like_target(c)]
    problems = []
    if leaky:
        problems.append(f"columns {leaky} look like forward returns / targets and would be used as "
                        f"features (leakage). Fix: add them to data.exclude, or set data.target_template "
                        f"to their naming if they are the targets (now '{hz.template}').")
    feats = [c for c in feats if c not in leaky]
    if not feats:
        problems.append("no numeric feature columns left after removing ids, targets and data.exclude. "
                        "Fix: the dataset needs numeric feature columns (see atft build-dataset).")
    return feats, problems


def target_dtype_problems(schema: pl.Schema, cfg: Config) -> list[str]:
    """Configured targets present in ``schema`` whose dtype is not a number (named with the fix)."""
    bad = [f"{t} ({schema[t]})" for t in target_columns(schema, cfg) if not schema[t].is_numeric()]
    return [f"target columns {bad} are not numbers. Fix: store the forward returns as floats (a target is "
            "never cast from text silently)."] if bad else []


def infinite_message(columns: dict[str, int]) -> str:
    """THE message for +-inf values (check-data and the training pipeline say the same)."""
    return (f"+-inf in columns {sorted(columns)} ({sum(columns.values())} values; a division by zero upstream, e.g. "
            "a return on a zero price). Fix: replace them with null at the source (atft check-data lists them).")


def feature_columns(schema: pl.Schema, cfg: Config) -> list[str]:
    """THE model-input column selection (module docstring).

    Raises:
        DataError: an explicit feature is missing or not numeric, or a target / forward-return
            column (a configured target, another horizon, ``looks_like_target``) would be a feature.
    """
    feats, problems = selection_problems(schema, cfg)
    if problems:
        raise DataError(" ".join(problems))
    return feats
