"""VSN per-feature width on the embedded default: quality on the VALIDATION split only.

    nice -n 10 python bench/bench_vsn_width.py [--widths 0 8 4] [--seeds 0 1] [--epochs E] [key=value ...]

For every ``model.vsn_hidden`` (0 = full width, the embedded default's form) and training seed,
the embedded default is trained as ``atft train`` does (early stopping / best epoch on the
validation split), one run at a time on one torch thread. Reported per run, from the best
epoch's validation predictions (``predictions_val.parquet``): IC per horizon, IC / oracle on the
same (Code, Date) rows (the synthetic truth file) and seconds per training epoch. The test split
is never read here (``fit`` still scores it into its run directory, which this script deletes):
choices made from this table cannot leak the test split.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import be_nice, machine_line, md_table  # noqa: E402

from atft.config import load  # noqa: E402
from atft.horizons import Horizons  # noqa: E402
from atft.synth.cache import ensure_default_panel, truth_path  # noqa: E402
from atft.synth.oracle import oracle_on_predictions  # noqa: E402
from atft.train.fit import fit  # noqa: E402
from atft.train.prepare import prepare  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[0, 8, 4], help="model.vsn_hidden values (0 = full)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    ap.add_argument("--epochs", type=int, default=None, help="train.max_epochs (default: the config's)")
    ap.add_argument("--config", default="default")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    be_nice(10)
    torch.set_num_threads(1)
    print(machine_line())
    tmp = Path(tempfile.mkdtemp(prefix="atft_vsn_width_"))
    ov = [*args.overrides, "train.progress=false", f"train.run_dir={tmp / 'runs'}", f"train.log_dir={tmp / 'logs'}"]
    ov += [f"train.max_epochs={args.epochs}"] if args.epochs else []
    rows, summary = [], {}
    try:
        for seed in args.seeds:
            for width in args.widths:
                cfg = load(args.config, [*ov, f"model.vsn_hidden={width}", f"train.seed={seed}"], apply_env=False)
                data = ensure_default_panel(cfg) if not cfg.data.path else Path(cfg.data.path)
                h = Horizons.from_config(cfg)
                t0 = time.perf_counter()
                res = fit(cfg, prepare(cfg, str(data)), run_id=f"w{width}_s{seed}")
                frame = pl.read_parquet(res.run_dir / "predictions_val.parquet")
                o = oracle_on_predictions(frame, truth_path(data), h, cfg.data.min_stocks)
                d = min(width or cfg.model.hidden_size, cfg.model.hidden_size)
                s_ep = float(np.mean([r["train/seconds"] for r in res.history]))
                ratios = [o[k]["ratio"] for k in h.keys]
                rows.append((width, d, seed, res.best_epoch, s_ep, *[o[k]["model_ic"] for k in h.keys], *ratios))
                summary.setdefault(width, []).append(ratios)
                print(f"vsn_hidden={width} seed {seed}: best epoch {res.best_epoch}, "
                      f"{time.perf_counter() - t0:.0f} s, val IC/oracle {[round(r, 3) for r in ratios]}", flush=True)
                shutil.rmtree(res.run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = Horizons.from_config(load(args.config, apply_env=False)).keys
    print("\nvalidation split (best epoch by the config's early-stopping metric); IC / oracle on the same rows")
    print(md_table(["vsn_hidden", "d", "seed", "best epoch", "s/epoch", *[f"IC {k}" for k in keys],
                    *[f"IC/oracle {k}" for k in keys]], rows))
    print(md_table(["vsn_hidden", "seeds", *[f"mean IC/oracle {k}" for k in keys]],
                   [(w, len(r), *np.mean(r, axis=0)) for w, r in summary.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
