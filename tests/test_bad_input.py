"""Every mistake a user can make ends in one clear line, with nothing left behind (issue 17's table).

One test per row of the table of inputs that used to end in a traceback, a silent exit 0 or
debris, run through ``atft.cli.main`` in-process (exit code, stderr, the files left) and, where
the point is what the process does (no torch import before the input is checked, a real SIGINT),
in a subprocess. Rows that belong to other modules are tested there and named here:

- check-data on an empty file / 10 dates, +inf / duplicates without false FAILs:
  ``tests/test_data_checks.py`` (``test_an_empty_or_short_dataset_is_one_line``, ...);
- filter-data that would drop every feature or date: ``tests/test_filter.py``;
- the smoke suite on unreadable data (one FAIL row): ``tests/test_health_plugin.py``;
- resume after an interrupt equals an uninterrupted run: ``tests/test_train_loop.py``.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from atft.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_RUN = ["--config", "smoke", "--max-epochs", "1", "train.device=cpu", "train.progress=false",
             "train.max_steps_per_epoch=2", "data.min_stocks=10"]


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid small synthetic panel (60 stocks x 200 dates x 8 features)."""
    path = tmp_path_factory.mktemp("panel") / "p.parquet"
    assert main(["synth", "--out", str(path), "--stocks", "60", "--days", "200", "--features", "8",
                 "--config", "smoke"]) == 0
    return path


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (hidden temp files included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``atft ARGV`` in-process: (exit code, stderr); never a traceback."""
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return rc, err


def one_error_line(err: str, command: str) -> str:
    """The single ``atft COMMAND: error: ...`` line of stderr (it names a fix)."""
    lines = [ln for ln in err.splitlines() if ln.startswith(f"atft {command}: error:")]
    assert len(lines) == 1, err
    assert "Fix:" in lines[0], lines[0]
    return lines[0]


def train_argv(tmp_path: Path, data: Path | str, *extra: str) -> list[str]:
    return ["train", *SMALL_RUN, "--data-path", str(data), f"train.run_dir={tmp_path / 'runs'}",
            f"train.log_dir={tmp_path / 'logs'}", f"data.cache_dir={tmp_path / 'cache'}", *extra]


def write_variant(panel: Path, out: Path, edit: pl.Expr | None = None, frame: pl.DataFrame | None = None) -> Path:
    df = frame if frame is not None else pl.read_parquet(panel)
    (df.with_columns(edit) if edit is not None else df).write_parquet(out)
    return out


# ------------------------------------------------------------------ arguments and configs


@pytest.mark.parametrize(("flag", "key"), [(["--lr", "-1"], "train.lr=-1"), (["--max-epochs", "0"], "train.max_epochs=0"),
                                           (["--max-epochs", "-3"], "train.max_epochs=-3")])
def test_out_of_range_flags_exit_2_naming_the_key(tmp_path: Path, panel: Path, capsys: pytest.CaptureFixture[str],
                                                  flag: list[str], key: str) -> None:
    rc, err = run(train_argv(tmp_path, panel, *flag), capsys)
    assert rc == 2 and key in one_error_line(err, "train")
    assert listing(tmp_path) == []  # no run directory, no log, no cache


@pytest.mark.parametrize("command", ["train", "check-data"])
def test_a_yaml_whose_top_level_is_a_list(tmp_path: Path, panel: Path, capsys: pytest.CaptureFixture[str],
                                          command: str) -> None:
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- train\n- lr: 0.1\n")
    argv = (train_argv(tmp_path, panel) + ["--config", str(cfg)] if command == "train"
            else ["check-data", str(panel), "--config", str(cfg)])
    rc, err = run(argv, capsys)
    assert rc == 2 and "not a mapping of sections" in one_error_line(err, command)
    assert listing(tmp_path) == ["list.yaml"]


# ------------------------------------------------------------------ datasets


@pytest.mark.parametrize("command", ["train", "check-data"])
def test_a_directory_of_two_schemas_names_the_files_and_columns(tmp_path: Path, panel: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                command: str) -> None:
    df = pl.read_parquet(panel)
    folder = tmp_path / "data"
    folder.mkdir()
    cut = df["Date"].unique().sort()[100]
    df.filter(pl.col("Date") < cut).write_parquet(folder / "a.parquet")
    df.filter(pl.col("Date") >= cut).drop("x001").with_columns(pl.col("x002").cast(pl.Float64)
                                                               ).write_parquet(folder / "b.parquet")
    argv = train_argv(tmp_path, folder) if command == "train" else ["check-data", str(folder)]
    rc, err = run(argv, capsys)
    line = one_error_line(err, command)
    assert rc == 2 and "a.parquet" in line and "b.parquet lacks ['x001']" in line and "x002 Float32 -> Float64" in line


def test_a_target_stored_as_text(tmp_path: Path, panel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_variant(panel, tmp_path / "text.parquet", pl.col("feat_ret_5d").cast(pl.String))
    rc, err = run(["check-data", str(data)], capsys)  # a FAIL row, not an isnan traceback
    assert rc == 1
    rc, err = run(train_argv(tmp_path, data), capsys)  # never cast silently
    assert rc == 2 and "feat_ret_5d (String)" in one_error_line(err, "train")


def test_an_infinite_feature_stops_train_before_it_trains(tmp_path: Path, panel: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = write_variant(panel, tmp_path / "inf.parquet",
                         pl.when(pl.col("Code") == pl.col("Code").min()).then(float("inf")).otherwise(pl.col("x000"))
                         .alias("x000"))
    rc, err = run(train_argv(tmp_path, data), capsys)
    assert rc == 2 and "+-inf in columns ['x000']" in one_error_line(err, "train")
    assert listing(tmp_path) == ["inf.parquet"]


def test_a_panel_below_min_stocks(tmp_path: Path, panel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = pl.read_parquet(panel)
    three = df.filter(pl.col("Code").is_in(df["Code"].unique().sort().head(3).implode()))
    data = write_variant(panel, tmp_path / "three.parquet", frame=three)
    rc, err = run(train_argv(tmp_path, data), capsys)
    assert rc == 2 and "data.min_stocks=10" in one_error_line(err, "train")
    assert listing(tmp_path) == ["three.parquet"]


@pytest.mark.parametrize("dates", [60, 88])
def test_a_panel_too_short_to_split_fails_check_data_as_train_refuses_it(dates: int, tmp_path: Path, panel: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the long property profile: check-data passed a 79-date panel (its rule was 2 x the
    longest horizon + 20 = 60 dates) that train refused (warm-up 30, val/test 15 %, embargo 20
    before each: 89 dates for the smoke config). One rule now: ``splits.min_panel_dates``."""
    df = pl.read_parquet(panel)
    short = df.filter(pl.col("Date").is_in(df["Date"].unique().sort().head(dates).implode()))
    data = write_variant(panel, tmp_path / "short.parquet", frame=short)
    rc, err = run(train_argv(tmp_path, data), capsys)
    assert rc == 2 and "too few dates" in one_error_line(err, "train")
    rc, _ = run(["check-data", str(data), "--config", "smoke", "--json", str(tmp_path / "c.json")], capsys)
    import json

    rows = {r["name"]: r for r in json.loads((tmp_path / "c.json").read_text())["results"]}
    assert rc == 1 and not rows["dataset_size"]["passed"]
    assert rows["dataset_size"]["figure"] == dates and rows["dataset_size"]["threshold"] == 89


@pytest.mark.parametrize("name", ["prices.csv", "prices.parquet"])
def test_a_csv_where_parquet_is_expected(tmp_path: Path, panel: Path, capsys: pytest.CaptureFixture[str],
                                         name: str) -> None:
    pl.read_parquet(panel).head(50).write_csv(tmp_path / name)
    for argv, command in ((train_argv(tmp_path, tmp_path / name), "train"), (["check-data", str(tmp_path / name)],
                                                                             "check-data")):
        rc, err = run(argv, capsys)
        line = one_error_line(err, command)
        assert rc == 2 and "is a CSV / text file, not parquet" in line and "read_csv" in line
    assert listing(tmp_path) == [name]


# ------------------------------------------------------------------ outputs


@pytest.fixture
def read_only_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on which every write fails: a read-only tmpfs when mounting is allowed (root),
    a folder without write permission for other users, else (root without mount rights) a
    simulated read-only file system (``os.open`` with write flags fails with EROFS there)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if mounted:
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=False)
        return
    real_open = os.open

    def read_only_open(path: str | os.PathLike[str], flags: int, *args: int, **kw: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(folder) in os.fspath(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only_open)
    yield folder


def _prices(tmp_path: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    dates = pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 12, 31), "1d", eager=True)
    rows = [{"Code": f"{1000 + i}", "Date": d, "Close": float(100 * np.exp(rng.normal(0, 0.01)) + i)}
            for i in range(30) for d in dates]
    out = tmp_path / "prices.parquet"
    pl.DataFrame(rows).write_parquet(out)
    return out


def _commands_writing_to(dest: Path, tmp_path: Path, panel: Path) -> dict[str, list[str]]:
    return {
        "synth": ["synth", "--out", str(dest / "s.parquet") if dest.is_dir() else str(dest), "--stocks", "60",
                  "--days", "200", "--features", "8", "--config", "smoke"],
        "build-dataset": ["build-dataset", "--prices", str(_prices(tmp_path)), "--out", str(dest)],
        "check-data": ["check-data", str(panel), "--json", str(dest)],
        "filter-data": ["filter-data", "--input", str(panel), "--output", str(dest)],
    }


def test_every_command_on_a_read_only_file_system(tmp_path: Path, panel: Path, read_only_dir: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import atft.synth.generator

    def never(*a: object, **k: object) -> None:
        raise AssertionError("synth generated a panel it could not write")

    monkeypatch.setattr(atft.synth.generator, "generate", never)  # synth fails before generating
    commands = _commands_writing_to(read_only_dir / "out.parquet", tmp_path, panel)
    commands["synth"][2] = str(read_only_dir / "s.parquet")
    commands["train"] = train_argv(read_only_dir, panel)
    for command, argv in commands.items():
        rc, err = run(argv, capsys)
        line = one_error_line(err, command)
        assert rc == 2 and "cannot write" in line and str(read_only_dir) in line, line
        assert err.count("\n") == 1, err  # one line, no chained errors
    assert listing(read_only_dir) == []


@pytest.mark.parametrize("command", ["synth", "build-dataset", "check-data", "filter-data"])
def test_an_output_naming_an_existing_directory(tmp_path: Path, panel: Path, capsys: pytest.CaptureFixture[str],
                                                command: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = _commands_writing_to(out_dir, tmp_path, panel)[command]
    if command == "synth":
        argv[2] = str(tmp_path / "out.parquet")
        (tmp_path / "out.parquet").mkdir()
    rc, err = run(argv, capsys)
    line = one_error_line(err, command)
    assert rc == 2 and "is a directory" in line
    assert listing(out_dir) == []


# ------------------------------------------------------------------ interrupts


def test_ctrl_c_during_the_synth_write_leaves_none_of_the_three_files(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = pl.DataFrame.write_parquet
    calls: list[str] = []

    def write_then_interrupt(self: pl.DataFrame, file: str | Path, *args: object, **kw: object) -> None:
        calls.append(str(file))
        real(self, file, *args, **kw)  # type: ignore[arg-type]
        if len(calls) == 2:  # the truth file and the main panel are on disk (as temp files)
            raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_then_interrupt)
    out = tmp_path / "synth"
    out.mkdir()
    rc = main(["synth", "--out", str(out / "s.parquet"), "--stocks", "60", "--days", "200", "--features", "8",
               "--config", "smoke"])
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted; nothing half-written" in err and "Traceback" not in err
    assert len(calls) == 2 and listing(out) == []  # no orphan .meta.json / .truth.parquet / temp file


def test_ctrl_c_in_train_says_how_to_continue_and_resume_finishes(tmp_path: Path, panel: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import atft.train.fit

    real = atft.train.fit.train_epoch

    def sigint_then_train(*args: object, **kw: object) -> object:
        signal.raise_signal(signal.SIGINT)  # the StopRequest handler takes it: honoured after the first step
        return real(*args, **kw)

    monkeypatch.setattr(atft.train.fit, "train_epoch", sigint_then_train)
    rc, err = run(train_argv(tmp_path, panel, "--seed", "3"), capsys)
    assert rc == 130 and "interrupted by SIGINT at epoch 0, after batch 1" in err
    resume_line = [ln for ln in err.splitlines() if "continue with: atft train --resume" in ln]
    assert len(resume_line) == 1
    run_dir = Path(resume_line[0].split("--resume ")[1].strip())
    assert (run_dir / "checkpoints" / "last.pt").exists()
    monkeypatch.setattr(atft.train.fit, "train_epoch", real)
    rc, err = run(["train", "--resume", str(run_dir), *SMALL_RUN[2:]], capsys)
    assert rc == 0 and (run_dir / "metrics.json").exists()


def test_a_real_sigint_exits_130_without_a_traceback(tmp_path: Path, panel: Path) -> None:
    """A real Ctrl-C in a subprocess: at whatever point it lands, one line, exit 130, and either no
    run directory or a resumable one."""
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "atft.cli", *train_argv(tmp_path, panel)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (log_dir.exists() and any(log_dir.iterdir())):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    runs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
    assert all((r / "checkpoints" / "last.pt").exists() for r in runs), runs


# ------------------------------------------------------------------ a failed train


def test_a_failed_train_is_fast_and_leaves_nothing(tmp_path: Path, panel: Path) -> None:
    """Missing file, CSV, duplicates, too few dates: the error comes before torch is imported, and
    no run directory or log stays."""
    df = pl.read_parquet(panel)
    pl.concat([df, df.head(3)]).write_parquet(tmp_path / "dup.parquet")
    df.filter(pl.col("Date") < df["Date"].unique().sort()[40]).write_parquet(tmp_path / "short.parquet")
    df.head(20).write_csv(tmp_path / "csv.parquet")
    work = tmp_path / "work"
    work.mkdir()
    script = ("import sys\nfrom atft.cli import main\nrc = main(sys.argv[1:])\n"
              "assert 'torch' not in sys.modules, 'torch was imported before the input was checked'\n"
              "sys.exit(rc)\n")
    for name, expect in (("missing.parquet", "dataset not found"), ("csv.parquet", "CSV / text file"),
                         ("dup.parquet", "duplicate (Code, Date)"), ("short.parquet", "too few dates")):
        res = subprocess.run([sys.executable, "-c", script, *train_argv(work, tmp_path / name)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert expect in res.stderr and "Traceback" not in res.stderr
    assert listing(work) == []


def test_an_error_inside_a_started_run_is_in_its_log_and_removes_the_run(tmp_path: Path, panel: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from atft.errors import ConfigError
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    def bad_model(*a: object, **k: object) -> None:  # an input error raised after the run started
        raise ConfigError("model.hidden_size=3 is not divisible by model.attention_heads=2. Fix: choose one.")

    monkeypatch.setattr(ATFT_GAT_FAN, "from_config", bad_model)
    rc, err = run(train_argv(tmp_path, panel), capsys)
    assert rc == 2 and "not divisible" in one_error_line(err, "train")
    assert not (tmp_path / "runs").exists() or listing(tmp_path / "runs") == []
    logs = list((tmp_path / "logs").glob("train_*.log"))
    assert len(logs) == 1 and "failed: ConfigError: model.hidden_size=3" in logs[0].read_text()


def test_an_internal_error_is_a_short_line_and_a_saved_traceback(tmp_path: Path, panel: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import atft.cli.data

    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(atft.cli.data, "cli_check_data", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rc, err = run(["check-data", str(panel)], capsys)
    assert rc == 70 and "internal error: ZeroDivisionError: planted" in err and err.count("\n") == 1
    saved = Path(err.split("the full traceback is in ")[1].split(" ")[0])
    assert saved.parent == tmp_path and "Traceback" in saved.read_text()
