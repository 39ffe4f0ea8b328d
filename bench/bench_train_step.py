"""Training step on CPU: the VSN's full-width form against the small-width one, then samples/s
and the share of each step spent producing the batch.

    nice -n 10 python bench/bench_train_step.py [--quick] [--forms-only] [--forms-stocks N]
                                                [--forms-steps S] [--widths D ...] [--steps S]
                                                [--stocks N] [--days D]

**Forms** (first table): at ``configs/production.yaml`` (F=82, hidden 256, T=20, horizons
1/5/10/20, GATv2 heads (4, 2)) on one random day of ``--forms-stocks`` stocks (default 256, the
reference point; ``--quick``: 64) with ~20 neighbours a stock (``random_day_batch``, k=20), the
same ``train_step`` as ``atft train`` (forward + loss + backward + clip + AdamW) for:

* full width, today: ``model.vsn_hidden=0`` with today's fixed checkpoint rule (recompute the VSN
  in backward above 2^26 elements of ``[F, tokens, H]``, i.e. from N=160 at this config);
* full width, auto: ``model.vsn_hidden=0``, checkpointing decided from the available memory;
* small width: the production config as it is (``model.vsn_hidden`` from the config);
* ``--widths 8 32 ...``: the small-width form at these widths too (the sweep behind the default).

The forms alternate step by step in one process on one torch thread (one untimed warm-up step
each, counted by ``torch.utils.flop_counter.FlopCounterMode``: GFLOP per step; it has no formula
for the LSTM's ``mkldnn_rnn_layer``, so the LSTM is not in the count). s/step is the median of the
timed steps; GFLOP/s = GFLOP / s; "peak" is this machine's one-thread fp32 matmul rate
(2048 x 2048 ``mm``, best of 5, measured before and after the forms; the higher is shown). Peak RSS
is measured apart, one process per form that builds it and runs two steps (GNU time's max RSS: the
model, AdamW state, activations and the interpreter; in the shared timing process the allocator's
retained memory would blur the forms). Speed-up = today's s/step / the form's.

**Loader share** (second table, skipped by ``--forms-only``): two scales, each on a real panel
through ``atft.data.pipeline.prepare`` (the same path as ``atft train``):

* smoke: ``configs/smoke.yaml`` on its embedded synthetic panel (60 stocks, F=12, hidden 16,
  T=10, batch 256 stocks: several whole days per step);
* production: ``configs/production.yaml`` (F=82, hidden 256, T=20, batch 2,048 stocks) on a
  generated synthetic panel of 2,000 stocks x 300 days x 82 features, one whole day
  (~1,700-2,000 stocks) per step, graph on (``--quick``: 150 stocks x 160 days, batch_size 150 so
  still one day per step, 1 step).

For each: (1) ``loader("train")`` iterated alone for ``--steps`` batches (graph cache cleared
first, so graph building is included, as in a first epoch); (2) the full step
(forward + ``MultiHorizonLoss`` + backward + AdamW step + scheduler, as ``train_epoch`` does) over the
same batches with a cleared cache, timing the wait for each batch inside the loop too (the config's
``data.prefetch``, shown in the table, builds the next batch in a background thread meanwhile; the
first batch is always waited for).
samples/s = stock-days per second of the full loop; "batch share" = loader time / full loop time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_TMP, REPO, be_nice, gib, machine_line, md_table, python, run_measured  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from atft.config import Config, load  # noqa: E402
from atft.data.pipeline import Prepared
from atft.model.atft_gat_fan import ATFT_GAT_FAN  # noqa: E402
from atft.synth.batches import random_day_batch  # noqa: E402
from atft.synth.cache import write_panel
from atft.synth.generator import SynthParams, generate  # noqa: E402
from atft.train.loss import MultiHorizonLoss  # noqa: E402
from atft.train.prepare import prepare  # noqa: E402
from atft.train.step import train_step  # noqa: E402

TODAY_CHECKPOINT_ELEMENTS = 1 << 26  # the VSN's fixed checkpoint rule before the memory-based one


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """One-thread fp32 ``mm`` rate in GFLOP/s (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


FORMS = {"full width, today": (["model.vsn_hidden=0"], TODAY_CHECKPOINT_ELEMENTS),
         "full width, auto": (["model.vsn_hidden=0"], None),
         "small width": ([], None)}


def form_overrides(name: str) -> tuple[list[str], int | None]:
    """Config overrides and checkpoint rule of a form: FORMS, or "small width d=<d>"."""
    if name in FORMS:
        return FORMS[name]
    return [f"model.vsn_hidden={int(name.rsplit('=', 1)[1])}"], None


def build_form(name: str, stocks: int) -> dict:
    """One form at the production config (``form_overrides``): model, loss, AdamW, the day batch."""
    over, ckpt = form_overrides(name)
    cfg = load("production", over, apply_env=False)
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, 82).train()
    model.vsn.checkpoint_elements = ckpt
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.train.lr), weight_decay=float(cfg.train.weight_decay))
    return {"model": model, "loss": MultiHorizonLoss.from_config(cfg), "opt": opt, "s": [],
            "clip": float(cfg.train.grad_clip), "batch": random_day_batch(stocks, 20, 82, 4, k=20, seed=0)}


def step(r: dict) -> float:
    """One ``train_step`` of a form; wall seconds."""
    t0 = time.perf_counter()
    train_step(r["model"], r["batch"], r["loss"], r["opt"], grad_clip=r["clip"])
    return time.perf_counter() - t0


def form_peak_rss(name: str, stocks: int) -> int:
    """Peak RSS (bytes) of a process that builds one form and runs two steps (GNU time)."""
    cmd = [python(), __file__, "--rss-of", name, "--forms-stocks", str(stocks)]
    return run_measured(cmd, env={"PYTHONPATH": str(REPO)}).peak_rss


def forms(stocks: int, steps: int, widths: list[int]) -> list[tuple[object, ...]]:
    """The full-width and small-width VSN forms at the production config, steps interleaved;
    ``widths``: more small-width forms at these ``model.vsn_hidden``."""
    names = [*FORMS, *(f"small width d={d}" for d in widths)]
    runs = {name: build_form(name, stocks) for name in names}
    peak = matmul_peak()
    for r in runs.values():  # warm-up (optimizer state allocated), FLOPs counted
        with FlopCounterMode(display=False) as fc:
            step(r)
        r["gflop"] = fc.get_total_flops() / 1e9
        with torch.enable_grad():
            r["ckpt"] = r["model"].vsn.checkpointed(r["batch"].features, stocks * 20)
    for _ in range(steps):
        for r in runs.values():
            r["s"].append(step(r))
    peak = max(peak, matmul_peak())
    today = statistics.median(runs["full width, today"]["s"])
    rows = []
    for name, r in runs.items():
        sec = statistics.median(r["s"])
        rows.append((name, r["model"].vsn.feature_size, sum(p.numel() for p in r["model"].parameters()),
                     "yes" if r["ckpt"] else "no", stocks, sec, min(r["s"]), stocks / sec, r["gflop"],
                     r["gflop"] / sec, f"{r['gflop'] / sec / peak:.1%}", f"{today / sec:.2f}x"))
    del runs
    rss = [gib(form_peak_rss(name, stocks)) for name in names]  # one process per form, after the timing
    rows = [(*row[:-1], m, row[-1]) for row, m in zip(rows, rss, strict=True)]
    print(f"\nVSN forms at configs/production.yaml, N={stocks} stocks x T=20, F=82, ~20 neighbours; "
          f"{steps} timed steps each, interleaved; one-thread fp32 matmul peak {peak:.1f} GFLOP/s")
    print(md_table(["form", "VSN width d", "params", "VSN checkpointed", "N", "s/step (median)", "min s",
                    "stocks/s", "GFLOP/step", "GFLOP/s", "of peak", "peak RSS (own process)",
                    "speed-up vs today"], rows))
    return rows


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
    wall = time.perf_counter() - t0
    close = getattr(it, "close", None)
    if close is not None:
        close()  # a prefetching loader's worker
    return {"wall": wall, "wait": wait, "stocks": n, "compute": sum(step_s), "first_step": step_s[0],
            "prefetch": loader.prefetch}


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
            f"{full['wait'] / full['wall']:.1%}", full["prefetch"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="production panel 150 stocks x 160 days, one day per step, 1 step")
    p.add_argument("--steps", type=int, default=None, help="smoke steps (default 20; quick 10)")
    p.add_argument("--prod-steps", type=int, default=None, help="production steps (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine 2 threads was up to 70x slower; 0 = torch default)")
    p.add_argument("--stocks", type=int, default=None, help="production panel stocks (default 2,000)")
    p.add_argument("--days", type=int, default=None, help="production panel days (default 300)")
    p.add_argument("--forms-stocks", type=int, default=None, help="stocks of the forms' day (default 256; quick 64)")
    p.add_argument("--forms-steps", type=int, default=None, help="timed steps per form (default 3; quick 1)")
    p.add_argument("--forms-only", action="store_true", help="only the forms table (no loader-share table)")
    p.add_argument("--widths", type=int, nargs="*", default=[],
                   help="also time the small-width form at these model.vsn_hidden (a width sweep)")
    p.add_argument("--rss-of", default=None, help=argparse.SUPPRESS)  # child of form_peak_rss
    args = p.parse_args()
    if args.rss_of:
        torch.set_num_threads(1)
        r = build_form(args.rss_of, args.forms_stocks or 256)
        step(r)
        step(r)
        return
    be_nice(10)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(machine_line())
    forms(args.forms_stocks or (64 if args.quick else 256), args.forms_steps or (1 if args.quick else 3), args.widths)
    if args.forms_only:
        return
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
                    "batch share (wait inside loop)", "data.prefetch"], rows))
    print(f"(panel {path} kept for reuse; delete {BENCH_TMP} when done)")


if __name__ == "__main__":
    main()
