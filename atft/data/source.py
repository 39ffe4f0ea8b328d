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
        check_parquet_file(f)
    return files


MAGIC = b"PAR1"  # a parquet file starts and ends with it


def check_parquet_file(f: Path) -> None:
    """``f`` is a complete parquet file: not empty, not CSV / text, not cut short.

    Raises:
        DataError: naming what the file is instead, with the fix.
    """
    size = f.stat().st_size
    if size == 0:
        raise DataError(f"dataset file is empty: {f}. Fix: rebuild it (atft build-dataset / atft synth).")
    with f.open("rb") as fh:
        head = fh.read(1024)
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if head[:4] == MAGIC and tail == MAGIC and size >= 12:
        return
    if head[:4] == MAGIC:
        raise DataError(f"{f} is an incomplete parquet file (no footer: the write was cut short). Fix: rewrite it "
                        "(rerun the command that made it).")
    text = head.decode("utf-8", errors="replace")
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text[:200]) and any(c in text for c in ",;\t"):
        raise DataError(f"{f} is a CSV / text file, not parquet. Fix: convert it, e.g. "
                        f"polars.read_csv('{f.name}').write_parquet('{f.stem if f.suffix != '.parquet' else f.stem + '_converted'}.parquet') (atft build-dataset reads "
                        "CSV price files directly).")
    raise DataError(f"{f} is not a parquet file (it does not start with the parquet magic bytes). Fix: pass the "
                    "parquet dataset (atft build-dataset / atft synth write one).")


def check_one_schema(files: list[Path]) -> None:
    """Every file of a multi-file dataset has the same columns with the same dtypes.

    Raises:
        DataError: naming the files and columns that differ from the first file.
    """
    if len(files) < 2:
        return
    first = pl.read_parquet_schema(files[0])
    problems = []
    for f in files[1:]:
        other = pl.read_parquet_schema(f)
        parts = [f"{label} {cols}" for label, cols in (
            ("lacks", [c for c in first if c not in other]),
            ("adds", [c for c in other if c not in first]),
            ("retypes", [f"{c} {first[c]} -> {other[c]}" for c in first if c in other and first[c] != other[c]]))
            if cols]
        if parts:
            problems.append(f"{f.name} {', '.join(parts)}")
    if problems:
        raise DataError(f"the files of this dataset have different schemas (compared with {files[0].name}): "
                        f"{'; '.join(problems[:3])}{f'; and {len(problems) - 3} more files' if len(problems) > 3 else ''}"
                        ". Fix: rewrite them with one schema (the same columns and dtypes), or point at one file.")


def scan(path: str | os.PathLike[str], code_col: str = "Code", date_col: str = "Date") -> pl.LazyFrame:
    """Lazy scan of the dataset with ``Code`` cast to str and ``Date`` checked to be a date.

    Raises:
        DataError: missing/unreadable/empty file, no Code or Date column, a non-date Date.
    """
    files = resolve_files(path)
    check_one_schema(files)
    try:
        lf = pl.scan_parquet([str(f) for f in files])
        schema = lf.collect_schema()
    except Exception as exc:  # polars raises several types for corrupt files
        raise DataError(f"cannot read parquet at {path}: {exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}. "
                        "Fix: check it is a complete parquet file written by polars / pyarrow.") from None
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

