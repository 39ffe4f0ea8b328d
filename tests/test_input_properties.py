"""Property suite: malformed inputs derived from valid ones, through the CLI and the smoke suite.

Hypothesis draws a mutation of a valid dataset (drop / rename / retype a column; NaN, inf, text or
null cells; duplicate rows; time zones; a truncated file; two schemas in one directory; an empty
or tiny panel; CSV bytes), of a valid config (a list, null or scalar top level; wrong types,
unknown keys, out-of-range and non-finite numbers) or of an output location (read-only, a
directory), and runs ``atft check-data``, ``atft train`` and the smoke suite on it in-process.
Every example asserts:

- the exit code is in {0, 1, 2} (no internal error, no 130), and nothing printed a traceback;
- nothing is left behind but the command's documented outputs (a finished run's directory and
  log, the health report), and no temp file;
- exit 0 only when the input is valid by the rules written here, independently of the code
  (``Mutation.valid``), and a valid input is accepted.

CI runs a fixed, derandomized sample (``ATFT_PROPERTY_EXAMPLES`` scales it; default under two
minutes on 2 cores); ``ATFT_PROPERTY_PROFILE=long`` draws fresh examples, many more of them.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atft.cli import main

LONG = os.environ.get("ATFT_PROPERTY_PROFILE") == "long"
SCALE = float(os.environ.get("ATFT_PROPERTY_EXAMPLES", "1"))


def examples(n: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Settings of one property: ``n`` derandomized examples in CI, 20x as many fresh ones when long."""
    return settings(max_examples=max(1, int(n * SCALE * (20 if LONG else 1))), derandomize=not LONG,
                    deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("one_thread")

FEATURES = ["x000", "x001", "x002", "x003", "x004", "x005"]
TARGETS = ["feat_ret_1d", "feat_ret_5d", "feat_ret_10d", "feat_ret_20d"]
TRAIN = ["--config", "smoke", "--max-epochs", "1", "train.device=cpu", "train.progress=false",
         "train.max_steps_per_epoch=1", "data.min_stocks=10", "train.num_threads=1"]
MIN_STOCKS = 10  # data.min_stocks above


def _trainable(dates: int, warmup: int = 30, embargo: int = 20, fraction: float = 0.15) -> bool:
    """The smoke config's date rule, written out here apart from atft.data.splits: a warm-up of
    max(sequence_length - 1, graph.min_obs) = 30 dates, val and test round(0.15 x usable) dates
    each, an embargo of the longest horizon (20) before each, at least one train date, and
    2 x 20 + 20 dates so every horizon has targets outside its tail."""
    usable = dates - warmup
    held = round(fraction * usable)
    return dates >= 2 * 20 + 20 and held >= 1 and usable - 2 * held - 2 * embargo >= 1


MIN_DATES = next(d for d in range(1, 1000) if _trainable(d))  # 89 for the smoke config


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The valid dataset every mutation starts from: 30 stocks x 110 dates x 6 features."""
    path = tmp_path_factory.mktemp("valid") / "v.parquet"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synth", "--out", str(path), "--stocks", "30", "--days", "110", "--features", "6",
                     "--config", "smoke"]) == 0
    return pl.read_parquet(path)


def test_the_date_rule_written_here_agrees_with_the_code() -> None:
    from atft.config import load
    from atft.data.splits import min_panel_dates

    assert MIN_DATES == min_panel_dates(load("smoke", ["data.min_stocks=10"])) == 89


# ------------------------------------------------------------------ mutations of a dataset


@dataclass(frozen=True)
class Mutation:
    """A way to write a dataset from the valid one, and whether training on it must work.

    ``valid``: True = a dataset atft must train on (exit 0); False = atft must refuse it (never exit
    0); None = either is right (e.g. a text column, which may be an id and is not a feature).
    ``write`` puts the dataset (a file or a folder) under the folder it is given and returns its path.
    """

    name: str
    valid: bool | None
    write: Callable[[Path], Path]


def _file(df: pl.DataFrame) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        df.write_parquet(folder / "data.parquet")
        return folder / "data.parquet"
    return write


@st.composite
def dataset_mutations(draw: st.DrawFn, df: pl.DataFrame) -> Mutation:
    kind = draw(st.sampled_from(["identity", "shuffle", "drop", "rename", "retype", "cells", "duplicates",
                                 "time_zone", "truncate", "two_schemas", "empty", "tiny", "csv"]))
    share = draw(st.sampled_from([0.01, 0.2, 0.5]))
    seed = draw(st.integers(0, 2**16))
    mask = pl.Series(pl.DataFrame({"u": range(df.height)}).select(
        (pl.col("u").hash(seed) % 1000) < int(share * 1000)).to_series())
    if kind == "identity":
        return Mutation(kind, True, _file(df))
    if kind == "shuffle":
        return Mutation(kind, True, _file(df.sample(fraction=1.0, shuffle=True, seed=seed)))
    if kind in ("drop", "rename"):
        col = draw(st.sampled_from(["Code", "Date", *TARGETS, FEATURES[0]]))
        out = df.drop(col) if kind == "drop" else df.rename({col: col + "_renamed"})
        # a feature may go (five stay); an id or a target may not (a renamed feature is a new feature)
        return Mutation(f"{kind} {col}", col == FEATURES[0], _file(out))
    if kind == "retype":
        col, to = draw(st.sampled_from([("Code", pl.Int64), ("Date", pl.String), ("Date", pl.Int32),
                                        (TARGETS[1], pl.String), (TARGETS[1], pl.Float64),
                                        (FEATURES[1], pl.Float64), (FEATURES[1], pl.String),
                                        (FEATURES[1], pl.Int64)]))
        valid = {("Code", pl.Int64): True, ("Date", pl.String): True, ("Date", pl.Int32): False,
                 (TARGETS[1], pl.String): False, (TARGETS[1], pl.Float64): True,
                 (FEATURES[1], pl.Float64): True, (FEATURES[1], pl.String): None,
                 (FEATURES[1], pl.Int64): True}[(col, to)]
        expr = pl.col(col).cast(pl.Int32) if (col, to) == ("Date", pl.Int32) else pl.col(col).cast(to)
        return Mutation(f"retype {col} {to}", valid, _file(df.with_columns(expr)))
    if kind == "cells":
        col = draw(st.sampled_from(["Code", "Date", TARGETS[0], TARGETS[3], FEATURES[2]]))
        value = draw(st.sampled_from(["null", "nan", "inf", "-inf", "text"]))
        if col in ("Code", "Date") and value in ("nan", "inf", "-inf"):
            value = "null"
        if value == "text":  # a text cell turns the whole column into text
            out = df.with_columns(pl.when(mask).then(pl.lit("n/a")).otherwise(pl.col(col).cast(pl.String)).alias(col))
            valid: bool | None = {"Code": True, "Date": False}.get(col, None if col in FEATURES else False)
            if col == "Code" and out.select(pl.struct("Code", "Date").is_duplicated().any()).item():
                valid = False  # two stocks renamed "n/a" on one date: a duplicate key (found by the long profile)
        else:
            fill = {"null": None, "nan": math.nan, "inf": math.inf, "-inf": -math.inf}[value]
            out = df.with_columns(pl.when(mask).then(pl.lit(fill)).otherwise(pl.col(col)).alias(col))
            # missing feature/target cells are trained around; an id must not be missing; inf never
            valid = value in ("null", "nan") and col not in ("Code", "Date")
        return Mutation(f"{value} in {share:.0%} of {col}", valid, _file(out))
    if kind == "duplicates":
        return Mutation("duplicate rows", False, _file(pl.concat([df, df.filter(mask).head(1 + seed % 5)])))
    if kind == "time_zone":
        tz = draw(st.sampled_from(["Asia/Tokyo", "UTC", "America/New_York"]))
        out = df.with_columns(pl.col("Date").cast(pl.Datetime("us")).dt.replace_time_zone(tz))
        return Mutation(f"Date as datetime in {tz}", True, _file(out))
    if kind == "truncate":
        cut = draw(st.floats(0.0, 0.99))

        def truncated(folder: Path) -> Path:
            _file(df)(folder)
            data = (folder / "data.parquet").read_bytes()
            (folder / "data.parquet").write_bytes(data[:int(cut * len(data))])
            return folder / "data.parquet"
        return Mutation(f"file cut at {cut:.0%}", False, truncated)
    if kind == "two_schemas":
        change = draw(st.sampled_from(["drop", "retype"]))

        def two(folder: Path) -> Path:
            (folder / "data").mkdir()
            dates = df["Date"].unique().sort()
            df.filter(pl.col("Date") < dates[60]).write_parquet(folder / "data" / "a.parquet")
            rest = df.filter(pl.col("Date") >= dates[60])
            rest = rest.drop(FEATURES[3]) if change == "drop" else rest.with_columns(pl.col(FEATURES[3]).cast(pl.Float64))
            rest.write_parquet(folder / "data" / "b.parquet")
            return folder / "data"
        return Mutation(f"two schemas ({change})", False, two)
    if kind == "empty":
        return Mutation("no rows", False, _file(df.head(0)))
    if kind == "tiny":
        stocks = draw(st.integers(1, 30))
        dates = draw(st.integers(1, 110))
        codes = df["Code"].unique().sort().head(stocks)
        days = df["Date"].unique().sort().head(dates)
        out = df.filter(pl.col("Code").is_in(codes.implode()) & pl.col("Date").is_in(days.implode()))
        return Mutation(f"{stocks} stocks x {dates} dates", (stocks >= MIN_STOCKS and dates >= MIN_DATES) or None,
                        _file(out))
    # csv bytes under a .parquet name

    def csv(folder: Path) -> Path:
        df.head(100).write_csv(folder / "data.parquet")
        return folder / "data.parquet"
    return Mutation("CSV named .parquet", False, csv)


# ------------------------------------------------------------------ running a command


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder per example (hypothesis reuses function-scoped fixtures), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="atft_prop_"))
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)
        shutil.rmtree(folder, ignore_errors=True)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def atft(argv: list[str]) -> tuple[int, str]:
    """Run ``atft ARGV`` in-process; (exit code, stdout + stderr). Asserts the universal properties:
    exit in {0, 1, 2} and no traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    text = out.getvalue() + err.getvalue()
    assert rc in (0, 1, 2), f"exit {rc}: {text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]
    if rc == 2:
        assert err.getvalue().count("\n") == 1 and "Fix:" in err.getvalue(), err.getvalue()
    return rc, text


def no_debris(folder: Path, before: set[str], allowed: Callable[[str], bool]) -> None:
    new = listing(folder) - before
    left = sorted(p for p in new if not allowed(p))
    assert not left, f"left behind: {left}"
    assert not [p for p in new if ".tmp" in p or ".atft_probe_" in p], new


def _run_output(p: str) -> bool:
    return p.split("/")[0] in ("runs", "logs")


@examples(30)
@given(data=st.data())
def test_check_data_and_train_on_a_mutated_dataset(valid: pl.DataFrame, data: st.DataObject) -> None:
    mutation = data.draw(dataset_mutations(valid), label="mutation")
    with workdir() as folder:
        path = mutation.write(folder)
        before = listing(folder)
        rc, text = atft(["check-data", str(path)])
        no_debris(folder, before, lambda p: False)
        if mutation.valid is False:
            assert rc != 0, f"check-data passed {mutation.name}"
        rc, text = atft(["train", *TRAIN, "--data-path", str(path), f"train.run_dir={folder / 'runs'}",
                         f"train.log_dir={folder / 'logs'}"])
        assert rc in (0, 2), text[-2000:]
        if mutation.valid is False:
            assert rc == 2, f"train accepted {mutation.name}"
        if mutation.valid is True:
            assert rc == 0, f"train refused a valid dataset ({mutation.name}): {text[-1000:]}"
        if rc == 0:
            runs = list((folder / "runs").iterdir())
            assert len(runs) == 1 and (runs[0] / "metrics.json").exists()
        else:
            assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())
        no_debris(folder, before, _run_output if rc == 0 else (lambda p: p == "logs" or p.startswith("logs/train_")))


@examples(8)
@given(data=st.data())
def test_the_smoke_suite_on_a_mutated_dataset(valid: pl.DataFrame, data: st.DataObject) -> None:
    """The data checks of the smoke suite in-process (``-k`` keeps the model checks out of the
    budget): exit 0 or 1, and a refused dataset is a FAIL row, never an error wall."""
    mutation = data.draw(dataset_mutations(valid), label="mutation")
    with workdir() as folder:
        path = mutation.write(folder)
        before = listing(folder)
        rc, text = atft(["health", "smoke", "--atft-data", str(path), "-q", "-p", "no:cacheprovider",
                         "-p", "no:randomly", "-k", "data or nan or target or feature or duplicate or inputs",
                         "--atft-report", str(folder / "report.json")])
        assert rc in (0, 1), text[-2000:]
        assert " ERROR " not in text and "errors" not in text.splitlines()[-1], text[-2000:]
        if mutation.valid is False:
            assert rc == 1 and "FAIL" in text, f"the smoke suite passed {mutation.name}"
        no_debris(folder, before, lambda p: p == "report.json")


# ------------------------------------------------------------------ mutations of a config

# the rules of the keys drawn below, written here from the documentation (README "Configs"): a
# number may be written as a YAML number or as a string of one (OmegaConf converts "1e-3", which
# YAML 1.1 reads as a string); a bool, null or text is not a number
RULES: dict[str, Callable[[object], bool]] = {
    "train.lr": lambda v: _finite(_as_float(v)) and _as_float(v) > 0,  # type: ignore[operator]
    "train.max_epochs": lambda v: _as_int(v) is not None and _as_int(v) >= 1,  # type: ignore[operator]
    "train.batch_size": lambda v: _as_int(v) is not None and _as_int(v) >= 1,  # type: ignore[operator]
    "model.dropout": lambda v: _finite(_as_float(v)) and 0 <= _as_float(v) < 1,  # type: ignore[operator]
    "graph.top_k": lambda v: _as_int(v) is not None and _as_int(v) >= 1,  # type: ignore[operator]
    "data.val_fraction": lambda v: _finite(_as_float(v)) and 0 <= _as_float(v) < 0.85,  # type: ignore[operator]
    "train.weight_decay": lambda v: _finite(_as_float(v)) and _as_float(v) >= 0,  # type: ignore[operator]
}


def _as_int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    return int(v) if isinstance(v, str) and v.strip().lstrip("+-").isdigit() else None


def _as_float(v: object) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)  # type: ignore[arg-type]
    except ValueError:
        return None


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _yaml_scalar(v: object) -> str:
    if isinstance(v, float):
        return ".nan" if v != v else (".inf" if v == math.inf else "-.inf" if v == -math.inf else repr(v))
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"'{v}'"
    return str(v)


VALUES = st.one_of(st.integers(-10, 2000), st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([None, True, "abc", "1e-3", "12", "-2", "nan"]))


@st.composite
def config_texts(draw: st.DrawFn) -> tuple[str, bool]:
    """A YAML config text and whether it is valid."""
    shape = draw(st.sampled_from(["key", "key", "key", "top", "section", "unknown", "nested"]))
    if shape == "top":
        return draw(st.sampled_from(["- train\n- lr: 0.1\n", "null\n", "42\n", "'text'\n", "[]\n"])), False
    if shape == "section":
        return f"train: {_yaml_scalar(draw(VALUES))}\n", False
    if shape == "unknown":
        return draw(st.sampled_from(["train:\n  learning_rate: 0.1\n", "trian:\n  lr: 0.1\n",
                                     "model:\n  hidden: 8\n"])), False
    if shape == "nested":
        return "train:\n  lr:\n    value: 0.1\n", False
    key = draw(st.sampled_from(sorted(RULES)))
    value = draw(VALUES)
    section, name = key.split(".")
    return f"{section}:\n  {name}: {_yaml_scalar(value)}\n", RULES[key](value)


@examples(60)
@given(cfg=config_texts())
def test_check_data_with_a_mutated_config(valid: pl.DataFrame, cfg: tuple[str, bool]) -> None:
    text, is_valid = cfg
    with workdir() as folder:
        valid.write_parquet(folder / "data.parquet")
        (folder / "c.yaml").write_text(text)
        before = listing(folder)
        rc, out = atft(["check-data", str(folder / "data.parquet"), "--config", str(folder / "c.yaml")])
        assert (rc != 2) == is_valid, f"{text!r}: exit {rc}: {out[-500:]}"
        no_debris(folder, before, lambda p: False)


@examples(6)
@given(cfg=config_texts().filter(lambda c: c[1] is False))
def test_train_with_a_mutated_config(valid: pl.DataFrame, cfg: tuple[str, bool]) -> None:
    text, _ = cfg
    with workdir() as folder:
        valid.write_parquet(folder / "data.parquet")
        (folder / "c.yaml").write_text(text)
        before = listing(folder)
        rc, out = atft(["train", "--config", str(folder / "c.yaml"), "--data-path", str(folder / "data.parquet"),
                        f"train.run_dir={folder / 'runs'}", f"train.log_dir={folder / 'logs'}"])
        assert rc == 2, f"{text!r}: exit {rc}"
        no_debris(folder, before, lambda p: False)


# ------------------------------------------------------------------ outputs


@examples(10)
@given(command=st.sampled_from(["check-data", "filter-data", "synth", "train"]),
       where=st.sampled_from(["directory", "file as folder", "read-only"]))
def test_unwritable_outputs(valid: pl.DataFrame, command: str, where: str) -> None:
    with workdir() as folder:
        valid.write_parquet(folder / "data.parquet")
        (folder / "a_dir").mkdir()
        (folder / "a_file").write_text("x")
        ro = folder / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = {"directory": folder / "a_dir", "file as folder": folder / "a_file" / "out.parquet",
                  "read-only": ro / "out.parquet"}[where]
        if where == "read-only" and os.geteuid() == 0:  # root writes through permissions: a file as folder
            target = folder / "a_file" / "sub" / "out.parquet"
        before = listing(folder)
        argv = {"check-data": ["check-data", str(folder / "data.parquet"), "--json", str(target)],
                "filter-data": ["filter-data", "--input", str(folder / "data.parquet"), "--output", str(target)],
                "synth": ["synth", "--out", str(target if target.suffix == ".parquet" else target / "s.parquet"),
                          "--stocks", "30", "--days", "80", "--features", "4", "--config", "smoke"],
                "train": ["train", *TRAIN, "--data-path", str(folder / "data.parquet"),
                          f"train.run_dir={target}", f"train.log_dir={folder / 'logs'}"]}[command]
        if command == "synth" and where == "directory":
            argv[2] = str(folder / "a_dir.parquet")
            (folder / "a_dir.parquet").mkdir()
            before = listing(folder)
        rc, out = atft(argv)
        ok_train_dir = command == "train" and where == "directory"  # a run directory inside an existing folder
        assert rc == (0 if ok_train_dir else 2), f"{command} -> {target}: exit {rc}: {out[-500:]}"
        ro.chmod(0o755)
        no_debris(folder, before, (lambda p: p.startswith("a_dir/") or _run_output(p)) if ok_train_dir else (lambda p: False))
