"""Torch threads on a shared machine: auto (``train.num_threads=0``) against fixed 1 and 2 threads.

    python bench/bench_threads.py [--steps 60] [--rounds 2] [--config default]

Trains ``--steps`` steps of the embedded default (one epoch's first steps, the same batches in
every contender) in a subprocess per contender: ``train.num_threads`` = 1, 2 and 0 (auto: the
governor of ``atft.train.threads`` times its first steps at each count and keeps the fastest),
first on the idle machine, then beside one busy process (a Python spin loop, the "any other
process used a core" of the issue). Rounds are interleaved; the best time of each contender is
kept. Printed per condition: seconds per step and auto / the better fixed count (goal <= 1.3).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import be_nice, machine_line, md_table, python, run_measured  # noqa: E402

TRAIN = """
import sys, time, torch
from atft.config import load
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.train.loss import MultiHorizonLoss
from atft.train.prepare import prepare
from atft.train.step import train_epoch
from atft.train.threads import configure_threads
cfg = load(sys.argv[1], ["train.num_threads=" + sys.argv[2], "health.guard_every=0"])
prep = prepare(cfg)
torch.manual_seed(0)
model = ATFT_GAT_FAN.from_config(cfg, prep.num_features)
opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
gov = configure_threads(cfg.train.num_threads, False)
loader = prep.loader("train", shuffle=True)
t0 = time.perf_counter()
stats = train_epoch(model, loader, MultiHorizonLoss.from_config(cfg), opt, max_steps=int(sys.argv[3]), governor=gov)
print("RESULT", (time.perf_counter() - t0) / stats.steps, torch.get_num_threads())
"""


def run(config: str, threads: int, steps: int) -> tuple[float, int]:
    res = run_measured([python(), "-c", TRAIN, config, str(threads), str(steps)])
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))
    _, s, k = line.split()
    return float(s), int(k)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--config", default="default")
    args = p.parse_args()
    be_nice(5)
    print(machine_line())
    # warm the embedded panel's cache so no contender pays for generating it
    run_measured([python(), "-c", f"from atft.config import load; from atft.synth.cache import ensure_default_panel; "
                  f"ensure_default_panel(load('{args.config}'))"])
    rows = []
    for condition in ("idle", "beside a busy loop"):
        busy = None
        if condition != "idle":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            best: dict[str, tuple[float, int]] = {}
            for _ in range(args.rounds):
                for name, k in (("1 thread", 1), ("2 threads", 2), ("auto", 0)):
                    s, used = run(args.config, k, args.steps)
                    if name not in best or s < best[name][0]:
                        best[name] = (s, used)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        fixed = min(best["1 thread"][0], best["2 threads"][0])
        rows.append((condition, best["1 thread"][0], best["2 threads"][0], best["auto"][0], best["auto"][1],
                     best["auto"][0] / fixed))
    print()
    print(md_table(["condition", "1 thread s/step", "2 threads s/step", "auto s/step", "auto ended at",
                    "auto / better fixed (goal <= 1.3)"], rows))


if __name__ == "__main__":
    main()
