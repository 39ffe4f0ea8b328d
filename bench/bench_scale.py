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
   The steps run once per ``--prefetch`` depth (default ``0 1 0 1``: loader prefetch off, on,
   interleaved), in one process on the same prepared panel, each with a fresh model (same seed)
   and a cleared graph cache (graphs built as in a first epoch): "batch wait" is the share of
   the loop spent waiting for the loader (also after the first batch, which no prefetch can
   hide: the share of a long epoch), and the step-time ratio on/off is printed; "process CPU /
   wall" above 1 means the prefetch thread found a second core (at 1 torch thread).
   ``--threads`` torch threads (default 1; 0 = torch's default).

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
variants, threads = [int(v) for v in sys.argv[5].split(",")], int(sys.argv[6])


class Timed:  # the loader as train_epoch sees it, recording the wait of every batch (first one apart)

    def __init__(self, loader):
        self.loader, self.waits = loader, []

    def __len__(self):
        return len(self.loader)

    def batches(self, start=0):
        it = self.loader.batches(start)
        try:
            while True:
                t = time.perf_counter()
                try:
                    b = next(it)
                except StopIteration:
                    return
                self.waits.append(time.perf_counter() - t)
                yield b
        finally:
            getattr(it, "close", lambda: None)()



if threads:
    torch.set_num_threads(threads)
cfg = load("default", [f"data.path={path}", *json.loads(sys.argv[4])], apply_env=False)
t0 = time.perf_counter()
prep = prepare(cfg)
out = {"prepare_s": time.perf_counter() - t0, **prep.timings, "shape": list(prep.panel.features.shape), "runs": []}
if not prepare_only:
    for depth in variants:  # same batches, fresh model and cleared graph cache each: a first epoch's steps
        if prep.graph_builder is not None:
            prep.graph_builder.clear_cache()
        torch.manual_seed(0)
        model = ATFT_GAT_FAN.from_config(cfg, prep.num_features)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        loader = prep.loader("train", shuffle=True)
        loader.prefetch = depth
        timed = Timed(loader)
        cpu0 = time.process_time()
        stats = train_epoch(model, timed, MultiHorizonLoss.from_config(cfg), opt, grad_clip=cfg.train.grad_clip,
                            max_steps=steps)
        out["runs"].append(dict(prefetch=depth, steps=stats.steps, epoch_steps=len(loader), seconds=stats.seconds,
                                batch_s=stats.batch_seconds, samples=stats.samples, loss=stats.loss,
                                first_wait=timed.waits[0] if timed.waits else 0.0, cpu_s=time.process_time() - cpu0))
print(json.dumps(out))
"""


def _ratio(runs: list[dict[str, float]]) -> str:
    """Step time and wait share of prefetch on vs off (sums over the interleaved rounds)."""
    off = [r for r in runs if r["prefetch"] == 0]
    on = [r for r in runs if r["prefetch"] > 0]
    if not off or not on:
        return ""

    def per_step(rs: list[dict[str, float]]) -> float:
        return sum(r["seconds"] for r in rs) / max(sum(r["steps"] for r in rs), 1)

    def wait(rs: list[dict[str, float]]) -> float:
        return sum(r["batch_s"] for r in rs) / sum(r["seconds"] for r in rs)

    def steady(rs: list[dict[str, float]]) -> float:
        return sum(r["batch_s"] - r["first_wait"] for r in rs) / sum(r["seconds"] - r["first_wait"] for r in rs)

    return (f"step time on/off {per_step(on) / per_step(off):.2f} ({per_step(on):.2f} vs {per_step(off):.2f} s); "
            f"batch wait {wait(on):.1%} on vs {wait(off):.1%} off (after the first batch, which no prefetch can "
            f"hide: {steady(on):.1%} vs {steady(off):.1%})")


def _steady(run: dict[str, float]) -> float:
    """Share of the loop spent waiting for batches after the first one (a long epoch's share)."""
    return (run["batch_s"] - run["first_wait"]) / max(run["seconds"] - run["first_wait"], 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="500 stocks x 300 days x 82 features, 2 steps")
    p.add_argument("--stocks", type=int, default=None)
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--features", type=int, default=82)
    p.add_argument("--steps", type=int, default=None, help="training steps timed (default 20; quick 2)")
    p.add_argument("--keep", action="store_true", help="keep the generated panel")
    p.add_argument("--prefetch", type=int, nargs="+", default=[0, 1, 0, 1],
                   help="data.prefetch depths timed in turn (default 0 1 0 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process (0 = default)")
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
                  ("prepare (load + split + normalize)", [python(), "-c", EPOCH, str(path), "0", "1",
                                                          json.dumps(args.overrides), "0", str(args.threads)]),
                  (f"train_epoch, {steps} steps x prefetch {args.prefetch}",
                   [python(), "-c", EPOCH, str(path), str(steps), "0", json.dumps(args.overrides),
                    ",".join(map(str, args.prefetch)), str(args.threads)])]
        for name, cmd in stages:
            if name == "atft synth" and path.exists():
                continue
            r = run_measured(cmd, cwd=REPO, check=False)
            if r.returncode not in (0, 1):  # check-data exits 1 when a check fails
                broke = f"{name} failed (exit {r.returncode}, peak RSS {gib(r.peak_rss)}): {r.stderr.strip()[-1500:]}"
                rows.append((name, r.seconds, gib(r.peak_rss), "FAILED"))
                break
            note, extra = "", []
            if name == "atft synth":
                note = r.stdout.strip().splitlines()[0][:100]
            elif name == "atft check-data":
                note = r.stdout.strip().splitlines()[-1].split("(")[0]
            else:
                o = json.loads(r.stdout.strip().splitlines()[-1])
                if not o["runs"]:
                    note = f"panel {o['shape']}; load {o['load_s']:.1f} s, normalize {o['normalize_s']:.1f} s"
                else:
                    note = f"prepare {o['prepare_s']:.1f} s"
                    for run in o["runs"]:
                        per = run["seconds"] / max(run["steps"], 1)
                        epoch = per * run["epoch_steps"]
                        label = "EXTRAPOLATED" if run["steps"] < run["epoch_steps"] else "measured"
                        extra.append((f"  prefetch {run['prefetch']}", run["seconds"], "",
                                     f"{per:.2f} s/step ({run['samples'] / run['seconds']:.0f} samples/s), batch wait "
                                     f"{run['batch_s'] / run['seconds']:.1%} ({run['batch_s'] / max(run['steps'], 1):.2f} "
                                     f"s/step; after the first batch {_steady(run):.1%}); process CPU / wall "
                                     f"{run['cpu_s'] / run['seconds']:.2f}; epoch = {run['epoch_steps']} "
                                     f"steps -> {epoch / 60:.1f} min ({label} from {run['steps']} steps)"))
                    ratio = _ratio(o["runs"])
                    if ratio:
                        note += "; " + ratio
            rows += [(name, r.seconds, gib(r.peak_rss), note), *extra]
    finally:
        if not args.keep:
            for s in side:
                s.unlink(missing_ok=True)
    print()
    print(md_table(["stage", "wall s", "peak RSS", "notes"], rows))
    print(f"panel: {n} stocks x {d} days x {f} features; config default {' '.join(args.overrides)}; "
          f"training process torch threads {args.threads or 'default'}")
    print(f"what breaks first: {broke or 'nothing at this size'}")


if __name__ == "__main__":
    main()
