"""Training step on CPU: samples/s and the share of each step spent producing the batch.

    nice -n 10 python bench/bench_train_step.py [--quick] [--steps S] [--stocks N] [--days D]

Two scales, each on a real panel through ``atft.data.pipeline.prepare`` (the same path as
``atft train``):

* smoke: ``configs/smoke.yaml`` on its embedded synthetic panel (60 stocks, F=12, hidden 16,
  T=10, batch 256 stocks: several whole days per step);
* production: ``configs/production.yaml`` (F=82, hidden 256, T=20, batch 2,048 stocks) on a
  generated synthetic panel of 2,000 stocks x 300 days x 82 features, one whole day
  (~1,700-2,000 stocks) per step, graph on (``--quick``: 150 stocks x 160 days, batch_size 150 so
  still one day per step, 1 step).

For each: (1) ``loader("train")`` iterated alone for ``--steps`` batches (graph cache cleared
first, so graph building is included, as in a first epoch); (2) the full step
(forward + ``MultiHorizonLoss`` + backward + AdamW step + scheduler, as ``train_epoch`` does) over the
same batches with a cleared cache, timing the wait for each batch inside the loop too.
samples/s = stock-days per second of the full loop; "batch share" = loader time / full loop time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_TMP, be_nice, machine_line, md_table  # noqa: E402

from atft.config import Config, load  # noqa: E402
from atft.data.pipeline import Prepared
from atft.model.atft_gat_fan import ATFT_GAT_FAN  # noqa: E402
from atft.synth.cache import write_panel
from atft.synth.generator import SynthParams, generate  # noqa: E402
from atft.train.loss import MultiHorizonLoss  # noqa: E402
from atft.train.prepare import prepare  # noqa: E402


def production_panel(stocks: int, days: int, features: int = 82) -> Path:
    """Generate (once) the synthetic panel for the production-scale run under BENCH_TMP."""
    path = BENCH_TMP / f"prod_{stocks}x{days}x{features}.parquet"
    if not path.exists():
        BENCH_TMP.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_panel(path, generate(SynthParams(stocks=stocks, days=days, features=features, informative=8)))
        print(f"generated {path.name} in {time.perf_counter() - t0:.1f} s")
    return path


def loader_alone(prep: Prepared, steps: int) -> tuple[float, int]:
    """Seconds to produce ``steps`` train batches (graph cache cleared), and their stock count."""
    if prep.graph_builder is not None:
        prep.graph_builder.clear_cache()
    loader = prep.loader("train", shuffle=True)
    t0, n = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        n += batch.num_stocks
    return time.perf_counter() - t0, n


def full_steps(cfg: Config, prep: Prepared, steps: int) -> dict[str, float]:
    """``steps`` full training steps; wall seconds, seconds waiting for batches, stock-days."""
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, prep.num_features).train()
    loss_fn = MultiHorizonLoss.from_config(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.train.lr), weight_decay=float(cfg.train.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    if prep.graph_builder is not None:
        prep.graph_builder.clear_cache()
    loader = prep.loader("train", shuffle=True)
    it = iter(loader)
    wait, n, step_s = 0.0, 0, []
    t0 = time.perf_counter()
    for _ in range(steps):
        tb = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - tb
        ts = time.perf_counter()
        lo = loss_fn(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        lo.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.train.grad_clip))
        opt.step()
        sched.step()
        step_s.append(time.perf_counter() - ts)
        n += batch.num_stocks
    return {"wall": time.perf_counter() - t0, "wait": wait, "stocks": n, "compute": sum(step_s),
            "first_step": step_s[0]}


def bench(name: str, cfg: Config, steps: int) -> tuple[object, ...]:
    t0 = time.perf_counter()
    prep = prepare(cfg)
    prep_s = time.perf_counter() - t0
    alone, n_alone = loader_alone(prep, steps)
    full = full_steps(cfg, prep, steps)
    params = sum(p.numel() for p in ATFT_GAT_FAN.from_config(cfg, prep.num_features).parameters())
    return (name, prep.num_features, int(cfg.model.hidden_size), int(cfg.data.sequence_length),
            round(full["stocks"] / steps), params, steps, prep_s, full["wall"] / steps,
            full["stocks"] / full["wall"], alone / steps, f"{alone / full['wall']:.1%}",
            f"{full['wait'] / full['wall']:.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="production panel 150 stocks x 160 days, one day per step, 1 step")
    p.add_argument("--steps", type=int, default=None, help="smoke steps (default 20; quick 10)")
    p.add_argument("--prod-steps", type=int, default=None, help="production steps (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine 2 threads was up to 70x slower; 0 = torch default)")
    p.add_argument("--stocks", type=int, default=None, help="production panel stocks (default 2,000)")
    p.add_argument("--days", type=int, default=None, help="production panel days (default 300)")
    args = p.parse_args()
    be_nice(10)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(machine_line())
    stocks = args.stocks or (150 if args.quick else 2000)
    days = args.days or (160 if args.quick else 300)
    rows = [bench("smoke", load("smoke", apply_env=False), args.steps or (10 if args.quick else 20))]
    path = production_panel(stocks, days)
    over = [f"data.path={path}"] + ([f"train.batch_size={stocks}"] if args.quick else [])  # quick: one day/step
    cfg = load("production", over, apply_env=False)
    rows.append(bench(f"production ({stocks} stocks)", cfg, args.prod_steps or (1 if args.quick else 3)))
    print()
    print(md_table(["scale", "F", "hidden", "T", "stocks/step", "params", "steps", "prepare s", "s/step",
                    "samples/s", "loader alone s/batch", "batch share (loader alone / step)",
                    "batch share (wait inside loop)"], rows))
    print(f"(panel {path} kept for reuse; delete {BENCH_TMP} when done)")


if __name__ == "__main__":
    main()
