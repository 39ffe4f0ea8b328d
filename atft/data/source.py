"""Open a dataset as a polars LazyFrame: a parquet file, a directory of parquet files, or a glob.

Only the schema is read here; nothing is loaded. Every problem is one ``DataError`` naming the
problem and the fix.
"""

from __future__ import annotations

import glob as _glob
import os
from pathlib import Path

import polars as pl

from atft.errors import DataError

TRUTH_SUFFIX = ".truth.parquet"  # synthetic ground truth: never part of a training dataset


def resolve_files(path: str | os.PathLike[str]) -> list[Path]:
    """The parquet files behind ``path`` (file, directory or glob), sorted; truth files excluded."""
    s = str(path)
    if any(ch in s for ch in "*?["):
        files = [Path(f) for f in sorted(_glob.glob(s, recursive=True))]
    else:
        p = Path(s)
        if p.is_dir():
            files = sorted(p.rglob("*.parquet"))
        elif p.exists():
            files = [p]
        else:
            raise DataError(f"dataset not found: {s}. Fix: pass an existing parquet file, a directory "
                            "of parquet files or a glob (e.g. 'data/*.parquet').")
    files = [f for f in files if f.is_file() and not f.name.endswith(TRUTH_SUFFIX)]
    if not files:
        raise DataError(f"no parquet files found at {s}. Fix: point to a .parquet file, a directory "
                        "holding some, or a glob that matches some.")
    for f in files:
        if f.stat().st_size == 0:
            raise DataError(f"dataset file is empty: {f}. Fix: rebuild it (atft build-dataset / atft synth).")
    return files


def scan(path: str | os.PathLike[str], code_col: str = "Code", date_col: str = "Date") -> pl.LazyFrame:
    """Lazy scan of the dataset with ``Code`` cast to str and ``Date`` checked to be a date.

    Raises:
        DataError: missing/unreadable/empty file, no Code or Date column, a non-date Date.
    """
    files = resolve_files(path)
    try:
        lf = pl.scan_parquet([str(f) for f in files])
        schema = lf.collect_schema()
    except Exception as exc:  # polars raises several types for corrupt files
        raise DataError(f"cannot read parquet at {path}: {exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}. "
                        "Fix: check the file is a complete parquet file (rewrite it if a write was interrupted).") from None
    missing = [c for c in (code_col, date_col) if c not in schema]
    if missing:
        raise DataError(f"dataset {path} has no {missing} column(s); columns are "
                        f"{list(schema.names())[:20]}. Fix: rename the stock id to '{code_col}' and the "
                        f"trading date to '{date_col}' (or set data.code_col / data.date_col).")
    dtype = schema[date_col]
    if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
        lf = lf.with_columns(pl.col(date_col).dt.date())
    elif dtype == pl.String:
        lf = lf.with_columns(pl.col(date_col).str.to_date(strict=False))
    elif dtype != pl.Date:
        raise DataError(f"column '{date_col}' has dtype {dtype}, not a date. Fix: store it as a "
                        "parquet date (polars pl.Date) or an ISO string 'YYYY-MM-DD'.")
    if schema[code_col] != pl.String:
        lf = lf.with_columns(pl.col(code_col).cast(pl.String))
    return lf

