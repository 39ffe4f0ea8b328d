"""The whole pipeline at scale: synth, check-data, prepare, and one training epoch, on CPU.

    nice -n 10 python bench/bench_scale.py [--quick] [--stocks N] [--days D] [--features F]
                                          [--steps S] [--keep] [key=value ...]

Each stage runs in its own subprocess (wall time and peak RSS from GNU time) on a generated
panel of 4,000 stocks x 1,200 days x 82 features (``--quick``: 500 x 300 x 82), written under
``$ATFT_BENCH_TMP`` (default /tmp/atft_bench) and deleted afterwards unless ``--keep``:

1. ``atft synth --stocks 4000 --days 1200 --features 82``;
2. ``atft check-data`` on it;
3. ``prepare(cfg)`` (load the dense panel, split, fit + apply the normalizer): the load time;
4. training with the default config on it (``data.path`` set): ``--steps`` optimisation steps
   (default 20) through ``train_epoch``; the epoch time is EXTRAPOLATED to the epoch's
   ``len(loader)`` steps (labelled) when it would run past ~10 minutes, measured otherwise.

A stage that fails is reported with its error (what breaks first), and the later stages that
depend on it are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_TMP, REPO, be_nice, gib, machine_line, md_table, python, run_measured  # noqa: E402

EPOCH = """
import json, sys, time, logging
import torch
from atft.config import load
from atft.train.prepare import prepare
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.train.step import train_epoch
from atft.train.loss import MultiHorizonLoss
path, steps, prepare_only = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
cfg = load("default", [f"data.path={path}", *json.loads(sys.argv[4])], apply_env=False)
t0 = time.perf_counter()
prep = prepare(cfg)
out = {"prepare_s": time.perf_counter() - t0, **prep.timings, "shape": list(prep.panel.features.shape)}
if not prepare_only:
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, prep.num_features)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    loader = prep.loader("train", shuffle=True)
    stats = train_epoch(model, loader, MultiHorizonLoss.from_config(cfg), opt, grad_clip=cfg.train.grad_clip,
                        max_steps=steps)
    out.update(steps=stats.steps, epoch_steps=len(loader), seconds=stats.seconds, batch_s=stats.batch_seconds,
               samples=stats.samples, loss=stats.loss)
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="500 stocks x 300 days x 82 features, 2 steps")
    p.add_argument("--stocks", type=int, default=None)
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--features", type=int, default=82)
    p.add_argument("--steps", type=int, default=None, help="training steps timed (default 20; quick 2)")
    p.add_argument("--keep", action="store_true", help="keep the generated panel")
    p.add_argument("overrides", nargs="*", help="config overrides key=value for prepare / training")
    args = p.parse_args()
    be_nice(10)
    print(machine_line())
    n, d, f = args.stocks or (500 if args.quick else 4000), args.days or (300 if args.quick else 1200), args.features
    steps = args.steps or (2 if args.quick else 20)
    BENCH_TMP.mkdir(parents=True, exist_ok=True)
    path = BENCH_TMP / f"scale_{n}x{d}x{f}.parquet"
    side = [path, path.with_name(path.stem + ".meta.json"), path.with_name(path.stem + ".truth.parquet")]
    cli = [python(), "-m", "atft.cli"]
    rows: list[tuple[object, ...]] = []
    broke = ""
    try:
        stages = [("atft synth", [*cli, "synth", "--out", str(path), "--stocks", str(n), "--days", str(d),
                                  "--features", str(f)]),
                  ("atft check-data", [*cli, "check-data", str(path)]),
                  ("prepare (load + split + normalize)", [python(), "-c", EPOCH, str(path), "0", "1", json.dumps(args.overrides)]),
                  (f"train_epoch, {steps} steps", [python(), "-c", EPOCH, str(path), str(steps), "0", json.dumps(args.overrides)])]
        for name, cmd in stages:
            if name == "atft synth" and path.exists():
                continue
            r = run_measured(cmd, cwd=REPO, check=False)
            if r.returncode not in (0, 1):  # check-data exits 1 when a check fails
                broke = f"{name} failed (exit {r.returncode}, peak RSS {gib(r.peak_rss)}): {r.stderr.strip()[-1500:]}"
                rows.append((name, r.seconds, gib(r.peak_rss), "FAILED"))
                break
            note = ""
            if name == "atft synth":
                note = r.stdout.strip().splitlines()[0][:100]
            elif name == "atft check-data":
                note = r.stdout.strip().splitlines()[-1].split("(")[0]
            else:
                o = json.loads(r.stdout.strip().splitlines()[-1])
                if "steps" not in o:
                    note = f"panel {o['shape']}; load {o['load_s']:.1f} s, normalize {o['normalize_s']:.1f} s"
                else:
                    per = (o["seconds"]) / max(o["steps"], 1)
                    epoch = per * o["epoch_steps"]
                    label = "EXTRAPOLATED" if o["steps"] < o["epoch_steps"] else "measured"
                    note = (f"{per:.2f} s/step ({o['samples'] / o['seconds']:.0f} samples/s, batch wait "
                            f"{o['batch_s'] / o['seconds']:.1%}); epoch = {o['epoch_steps']} steps -> "
                            f"{epoch / 60:.1f} min ({label} from {o['steps']} steps)")
            rows.append((name, r.seconds, gib(r.peak_rss), note))
    finally:
        if not args.keep:
            for s in side:
                s.unlink(missing_ok=True)
    print()
    print(md_table(["stage", "wall s", "peak RSS", "notes"], rows))
    print(f"panel: {n} stocks x {d} days x {f} features; config default {' '.join(args.overrides)}")
    print(f"what breaks first: {broke or 'nothing at this size'}")


if __name__ == "__main__":
    main()
