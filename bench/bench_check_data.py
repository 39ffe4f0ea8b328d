"""`atft check-data` on a multi-GB parquet against the I/O floor and the pandas one-liner.

    nice -n 10 python bench/bench_check_data.py [--quick] [--stocks N] [--dates D] [--rounds R]
                                                 [--per-check] [--stages] [--keep] [--path P]
                                                 [--baseline REPO] [--skip-pandas]

Generates (in row-group chunks of ``--chunk`` stocks, never the whole frame in memory) a long
(Code, Date) parquet of ``stocks x dates`` rows with 96 float32 features ``f000..f095`` (~1 % NaN)
and 4 float32 targets ``feat_ret_{1,5,10,20}d`` (NaN in each stock's last h rows plus ~0.5 %),
under ``$ATFT_BENCH_TMP`` (default /tmp/atft_bench), and deletes it at the end unless ``--keep``.
Default: 2,500 stocks x 2,000 dates = 5M rows x 100 float columns (2.0 GB of float payload);
``--quick``: 300 x 1,000.

Each contender runs in its own subprocess (peak RSS from ``wait4``), after one untimed read that
puts the file in the page cache, interleaved over ``--rounds`` rounds (best time kept):

* floor: ``pl.scan_parquet(p).select(<float columns>.sum()).collect(engine="streaming")``
  (read and decode every value once: the I/O + decode floor);
* pandas: ``pd.read_parquet(p).isna().mean()`` (the obvious alternative; checks only NaN shares);
* check-data: ``atft check-data p`` (every registered check over one ``DatasetStats``,
  ``atft.health.dataset_checks.run_checks``);
* check-data (baseline): the same command on another checkout (``--baseline REPO``: its
  ``PYTHONPATH``), e.g. the code before a change, measured in the same rounds.

``--per-check`` also times, in one more subprocess, the one pass (``atft.data.stats.build_stats``)
and then each registered check reading its statistics. ``--stages`` splits that pass into its
parts (on one thread, so that the parts add up), in one more subprocess, next to two references
measured in the same process: reading the same batches alone, and one plain numpy copy of their
float32 values (the cost of ONE extra pass over the data in memory, which any computation on the
decoded values must at least pay).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BENCH_TMP,
    be_nice,
    free_disk_gib,
    gib,
    machine_line,
    md_table,
    python,
    run_measured,
)

N_FEATURES = 96
HORIZONS = (1, 5, 10, 20)
FEATURE_NAN = 0.01  # share of feature cells set to NaN
TARGET_NAN = 0.005  # share of target cells set to NaN outside the legitimate tail

FLOOR = """
import sys, polars as pl, polars.selectors as cs
out = pl.scan_parquet(sys.argv[1]).select(cs.float().sum()).collect(engine="streaming")
print(out.width)
"""
PANDAS = """
import sys, pandas as pd
out = pd.read_parquet(sys.argv[1]).isna().mean()
print(len(out))
"""
PER_CHECK = """
import json, sys, time
from atft.config import Config
from atft.data.stats import build_stats
from atft.health.dataset_checks import CHECKS
cfg = Config()
t0 = time.perf_counter()
stats = build_stats(sys.argv[1], cfg)  # the one pass every check reads
times = {"build_stats (the one pass)": time.perf_counter() - t0}
for name, fn in CHECKS.items():
    t0 = time.perf_counter()
    fn(stats, cfg)
    times[name] = time.perf_counter() - t0
print(json.dumps(times))
"""

STAGES = """
import json, sys, time
import numpy as np
from atft.config import Config
from atft.data import block as K, fold as F, moments as M, stats as S

spent = dict.fromkeys(["wait for a decoded batch", "dates, codes, 1-day bound",
                       "block: per-column stats, shifts, grid copy", "moments: counts",
                       "moments: products (matmul, squares)", "moments: target-missing sums",
                       "moments: feature-missing sums", "finish (tail, medians)"], 0.0)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t0
    return wrapper


M.Moments._products = timed("moments: products (matmul, squares)", M.Moments._products)
M.Moments._target_missing = timed("moments: target-missing sums", M.Moments._target_missing)
M.Moments._feature_missing = timed("moments: feature-missing sums", M.Moments._feature_missing)
M.Moments.add = timed("moments: counts", M.Moments.add)
F.fold_block = timed("block: per-column stats, shifts, grid copy", F.fold_block)
F.Fold.add = timed("dates, codes, 1-day bound", F.Fold.add)
S._finish = timed("finish (tail, medians)", S._finish)
batches = S.read_batches


def waited(*args):
    it = batches(*args)
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        spent["wait for a decoded batch"] += time.perf_counter() - t0
        if batch is None:
            return
        yield batch


S.read_batches = waited  # the name build_stats looks up
cfg = Config()
t0 = time.perf_counter()
S.build_stats(sys.argv[1], cfg, workers=1)  # one thread: the parts add up to the pass
total = time.perf_counter() - t0
# nested timers -> exclusive: add() contains fold_block, which contains Moments.add, which contains the sums
# products contain the target-missing sums (taken from the cached chunk)
spent["moments: products (matmul, squares)"] -= spent["moments: target-missing sums"]
inner = ["moments: products (matmul, squares)", "moments: target-missing sums", "moments: feature-missing sums"]
spent["moments: counts"] -= sum(spent[k] for k in inner)
block = "block: per-column stats, shifts, grid copy"
spent[block] -= spent["moments: counts"] + sum(spent[k] for k in inner)
spent["dates, codes, 1-day bound"] -= spent[block] + spent["moments: counts"] + sum(spent[k] for k in inner)
from atft.data.batches import open_source, batch_ranges, read_batches
src = open_source(sys.argv[1], cfg.data.code_col, cfg.data.date_col)
fold = F.Fold(S.plan_for(src.lf.collect_schema(), cfg), src.lf.collect_schema())
query = fold.query(src.lf)
ranges = batch_ranges(src, query, max(1024, S.BATCH_BYTES // fold.bytes_per_row()))
t0 = time.perf_counter()
values = 0
buf = None
copy = 0.0
for b in read_batches(query, ranges, "in-memory"):
    for j in range(fold.nb):
        x = b.get_column(f"_b{j}").to_numpy()
        if buf is None or buf.size < x.size:
            buf = np.empty(x.size, np.float32)
        t1 = time.perf_counter()
        np.copyto(buf[:x.size], x)
        copy += time.perf_counter() - t1
        values += x.size
read = time.perf_counter() - t0 - copy
print(json.dumps({"total": total, "stages": spent, "read batches alone": read,
                  "one numpy copy of the float32 values": copy, "values": values}))
"""


def generate(path: Path, stocks: int, dates: int, chunk: int, seed: int = 0) -> int:
    """Write the benchmark parquet in row groups of ``chunk`` stocks; returns the row count.

    Rows are sorted by (Code, Date). Features are N(0, 1), targets N(0, 0.02^2) (so no check
    fails on content: the benchmark times the checks, not their failure paths).

    Shapes:
        one row group: ``[chunk * dates, 2 + 96 + 4]``.
    """
    import polars as pl
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    day = np.busday_offset(np.datetime64("2012-01-02", "D"), np.arange(dates), roll="forward")
    date_col = pl.Series("Date", day, dtype=pl.Date)
    step = np.arange(dates)
    tmp = path.with_suffix(".tmp")
    writer = None
    try:
        for s0 in range(0, stocks, chunk):
            n = min(chunk, stocks - s0)
            rows = n * dates
            feats = rng.standard_normal((rows, N_FEATURES), dtype=np.float32)
            feats[rng.random((rows, N_FEATURES), dtype=np.float32) < FEATURE_NAN] = np.nan
            targ = 0.02 * rng.standard_normal((rows, len(HORIZONS)), dtype=np.float32)
            targ[rng.random((rows, len(HORIZONS)), dtype=np.float32) < TARGET_NAN] = np.nan
            tail = (dates - step)[None, :, None] <= np.asarray(HORIZONS)[None, None, :]  # [1, D, H]
            targ.reshape(n, dates, len(HORIZONS))[np.broadcast_to(tail, (n, dates, len(HORIZONS)))] = np.nan
            frame = pl.DataFrame({
                "Code": pl.Series(np.repeat(np.arange(s0, s0 + n) + 10000, dates).astype(str)),
                "Date": pl.concat([date_col] * n),
                **{f"f{k:03d}": feats[:, k] for k in range(N_FEATURES)},
                **{f"feat_ret_{h}d": targ[:, j] for j, h in enumerate(HORIZONS)},
            })
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=rows)
        assert writer is not None
        writer.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return stocks * dates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="300 stocks x 1,000 dates")
    p.add_argument("--stocks", type=int, default=None)
    p.add_argument("--dates", type=int, default=None)
    p.add_argument("--chunk", type=int, default=100, help="stocks per row group while generating")
    p.add_argument("--rounds", type=int, default=1, help="interleaved timed rounds (best kept)")
    p.add_argument("--per-check", action="store_true", help="also time each check alone")
    p.add_argument("--stages", action="store_true", help="also split the one streaming pass into its parts")
    p.add_argument("--skip-pandas", action="store_true", help="leave out the pandas contender")
    p.add_argument("--keep", action="store_true", help="keep the generated parquet")
    p.add_argument("--path", default=None, help="use (and keep) this existing benchmark parquet")
    p.add_argument("--baseline", default=None, help="also time check-data of this checkout (its PYTHONPATH)")
    p.add_argument("--json", default=None, help="write the measured numbers here")
    args = p.parse_args()
    be_nice(10)
    stocks = args.stocks or (300 if args.quick else 2500)
    dates = args.dates or (1000 if args.quick else 2000)
    print(machine_line())

    BENCH_TMP.mkdir(parents=True, exist_ok=True)
    path = Path(args.path).resolve() if args.path else BENCH_TMP / f"check_{stocks}x{dates}.parquet"
    keep = args.keep or bool(args.path)
    try:
        if not path.exists():
            need = stocks * dates * (N_FEATURES + len(HORIZONS)) * 4 * 1.3 / 2**30
            if free_disk_gib(path.parent) < need:
                raise SystemExit(f"need ~{need:.1f} GiB free under {path.parent}. Fix: set ATFT_BENCH_TMP.")
            import time

            t0 = time.perf_counter()
            generate(path, stocks, dates, args.chunk)
            print(f"generated {path} in {time.perf_counter() - t0:.1f} s")
        rows = stocks * dates
        payload = rows * (N_FEATURES + len(HORIZONS)) * 4
        size = path.stat().st_size
        print(f"data: {rows:,} rows x {N_FEATURES + len(HORIZONS)} float32 columns; file {gib(size)}, "
              f"float payload in memory {gib(payload)}")

        cmds = {
            "floor (polars scan, one sum per column)": [python(), "-c", FLOOR, str(path)],
            "atft check-data": [python(), "-m", "atft.cli", "check-data", str(path)],
        }
        envs: dict[str, dict[str, str]] = {}
        cwds: dict[str, Path] = {}
        if args.baseline:  # run from the baseline checkout: ``python -m`` puts the cwd first on sys.path
            name = f"atft check-data (baseline {args.baseline})"
            cmds[name] = cmds["atft check-data"]
            envs[name] = {"PYTHONPATH": str(Path(args.baseline).resolve())}
            cwds[name] = Path(args.baseline).resolve()
        if not args.skip_pandas:
            cmds["pandas read_parquet().isna().mean()"] = [python(), "-c", PANDAS, str(path)]
        run_measured(cmds["floor (polars scan, one sum per column)"])  # page cache warm-up
        best: dict[str, tuple[float, int, float]] = {}
        for r in range(args.rounds):
            for name, cmd in cmds.items():
                res = run_measured(cmd, env=envs.get(name), cwd=cwds.get(name), check=False)
                if res.returncode not in (0, 1):  # check-data exits 1 when a check fails
                    raise RuntimeError(f"{name} failed ({res.returncode}): {res.stderr[-2000:]}")
                if name.startswith("atft check-data") and r == 0:
                    print(f"{name}: {res.stdout.strip().splitlines()[-1]}")
                prev = best.get(name)
                if prev is None or res.seconds < prev[0]:
                    best[name] = (res.seconds, max(res.peak_rss, prev[1] if prev else 0), res.cpu_seconds)
        floor = best["floor (polars scan, one sum per column)"][0]
        table = [(name, s, s / floor, cpu, gib(rss), f"{rss / payload:.2f}")
                 for name, (s, rss, cpu) in best.items()]
        print()
        print(md_table(["contender", "wall s", "x floor", "cpu s", "peak RSS", "RSS / payload"], table))
        out: dict[str, object] = {"rows": rows, "file_bytes": size, "payload_bytes": payload,
                                  "best": {k: {"s": v[0], "peak_rss": v[1], "cpu_s": v[2]} for k, v in best.items()}}
        if args.per_check:
            res = run_measured([python(), "-c", PER_CHECK, str(path)])
            times = json.loads(res.stdout.strip().splitlines()[-1])
            total = sum(times.values())
            print()
            print(md_table(["step", "s", "share", "x floor"],
                           [(k, v, f"{v / total:.1%}", v / floor) for k, v in
                            sorted(times.items(), key=lambda kv: -kv[1])]))
            print(f"the pass and every check {total:.2f} s")
            out["per_check"] = times
        if args.stages:
            res = run_measured([python(), "-c", STAGES, str(path)])
            st = json.loads(res.stdout.strip().splitlines()[-1])
            rows_ = [(k, v, f"{v / st['total']:.1%}", v / floor) for k, v in st["stages"].items()]
            rows_ += [("(sum of the parts, one thread)", sum(st["stages"].values()), "-",
                       sum(st["stages"].values()) / floor)]
            rows_ += [("(reference) read the same batches alone", st["read batches alone"], "-",
                       st["read batches alone"] / floor),
                      ("(reference) one numpy copy of the float32 values", st["one numpy copy of the float32 values"],
                       "-", st["one numpy copy of the float32 values"] / floor)]
            print()
            print(md_table(["part of the one pass", "s", "share", "x floor"], rows_))
            print(f"one pass on one thread {st['total']:.2f} s over {st['values']:,} float32 values")
            out["stages"] = st
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        print(f"\n(finished {dt.datetime.now():%Y-%m-%d %H:%M})")
    finally:
        if not keep and path.exists():
            path.unlink()
        if not keep and BENCH_TMP.exists() and not any(BENCH_TMP.iterdir()):
            shutil.rmtree(BENCH_TMP)


if __name__ == "__main__":
    main()
