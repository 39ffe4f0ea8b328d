"""The live guards' cost: training steps with the guards on (the config's ``health.guard_every`` and
``guard_graph_every``) against the same steps with them off, interleaved in one process.

    nice -n 10 python bench/bench_guards.py [--config default] [--steps 400] [--block 50] [--rounds 2]
                                            [key=value ...]

Two copies of the same model (same seed) and optimizer, fed the same pre-built batches of the
config's training split (the loader is not timed), step in alternating blocks of ``--block``
steps: one with ``Guards`` exactly as ``fit`` builds them (``atft.train.fit``), one without. The
guarded copy pays for its guard steps (a norm per part, a copy of the parameters, reductions of
the forward's output) and for the graph measurement (two eval forwards of a held batch every
``guard_graph_every`` steps), amortised as in a run. One torch thread. Printed: seconds per step
of each, the overhead (goal <= 3 %), and how many guard and graph checks the guarded copy made.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import be_nice, machine_line, md_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default")
    p.add_argument("--steps", type=int, default=400, help="steps per contender and round")
    p.add_argument("--block", type=int, default=50, help="steps per block before switching contender")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    be_nice(10)
    import torch

    torch.set_num_threads(1)
    from atft.config import load
    from atft.model.atft_gat_fan import ATFT_GAT_FAN
    from atft.train.fit import _guards
    from atft.train.loss import MultiHorizonLoss
    from atft.train.prepare import prepare
    from atft.train.step import train_step

    cfg = load(args.config, ["train.num_threads=1", *args.overrides])
    prep = prepare(cfg)
    batches = []
    while len(batches) < args.block:
        batches.extend(b for b in prep.loader("train", shuffle=False))
    torch.manual_seed(0)
    base = ATFT_GAT_FAN.from_config(cfg, prep.num_features)
    loss_fn = MultiHorizonLoss.from_config(cfg)
    contenders = {}
    for name in ("guards off", "guards on"):
        model = copy.deepcopy(base)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        guards = _guards(cfg, prep, model, 0, None, defer=False) if name == "guards on" else None
        contenders[name] = {"model": model, "opt": opt, "guards": guards, "s": 0.0, "n": 0}
    inside = timed_hooks(contenders["guards on"]["guards"])
    for _ in range(args.rounds):
        done = 0
        while done < args.steps:
            k = min(args.block, args.steps - done)
            order = list(contenders.values())
            if (done // args.block) % 2:  # alternate which contender goes first
                order.reverse()
            for c in order:
                t0 = time.perf_counter()
                for i in range(k):
                    train_step(c["model"], batches[(done + i) % len(batches)], loss_fn, c["opt"],
                               grad_clip=cfg.train.grad_clip, guards=c["guards"])
                c["s"] += time.perf_counter() - t0
                c["n"] += k
            done += k
    print(machine_line())
    off, on = contenders["guards off"], contenders["guards on"]
    s_off, s_on = off["s"] / off["n"], on["s"] / on["n"]
    report = on["guards"].series() if on["guards"] is not None else {"guards": {}}
    checks = {g: len(v["series"]) for g, v in report["guards"].items()}
    print(f"config {args.config} {' '.join(args.overrides)}: health.guard_every={cfg.health.guard_every}, "
          f"guard_graph_every={cfg.health.guard_graph_every}; {len(batches)} distinct batches, "
          f"{on['n']} steps per contender")
    print(md_table(["contender", "s/step", "steps", "guard series points"],
                   [("guards off", s_off, off["n"], "-"), ("guards on", s_on, on["n"], str(checks))]))
    print(f"\noverhead of the guards, step time on / off - 1: {100 * (s_on / s_off - 1):+.2f} % (goal <= 3 %); "
          f"time inside the guards' hooks: {100 * inside[0] / on['s']:.2f} % of the guarded run's step time "
          f"({inside[0]:.2f} s in {inside[1]} calls)")


def timed_hooks(guards):  # type: ignore[no-untyped-def]
    """Wrap the guards' hooks with a timer: [seconds inside, calls] (the direct measure of their cost,
    free of the load noise that the on/off difference carries on a shared machine)."""
    acc = [0.0, 0]
    for name in ("on_backward", "on_update", "on_step_end", "on_skipped"):
        fn = getattr(guards, name)

        def wrapped(*a, _fn=fn, **kw):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                acc[0] += time.perf_counter() - t0
                acc[1] += 1

        setattr(guards, name, wrapped)
    return acc


if __name__ == "__main__":
    main()
