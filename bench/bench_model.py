"""Model speed on CPU: forward+backward samples/s, and vectorized VSN vs a per-feature loop.

    python bench/bench_model.py [--quick] [--threads N]

1. ATFT_GAT_FAN training step (forward + MultiHorizonLoss + backward) on one random day
   (k-NN graph, k=8) at the smoke config (configs/smoke.yaml, F=12, N=256) and at production
   scale (configs/production.yaml: F=82, hidden 256, T=20, N=2,000 stocks; --quick: N=200).
   A sample is one stock-day; samples/s = N / seconds per step (best of the repeats).
2. VariableSelectionNetwork (batched GRNs over a ``[F, in, out]`` weight) against
   ``loop_reference`` (a Python loop over features, same weights) at F=82 and F=400 and
   H in {16, 64, 256} (smoke / default / production widths), 640 tokens (32 stocks x T=20;
   --quick: 160), forward+backward, interleaved in this process; outputs checked with allclose.

Every ratio is measured in the same run; the machine line says on what.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from atft.config import load
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.model.vsn import VariableSelectionNetwork
from atft.synth.batches import random_day_batch
from atft.train.loss import MultiHorizonLoss

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import best_of  # noqa: E402

from tests.reference import loop_reference  # noqa: E402  (the test suite's reference VSN)

timed = best_of  # best (minimum) seconds of each function over interleaved rounds


def bench_model(config: str, num_features: int, num_stocks: int, repeats: int) -> dict[str, object]:
    """One training step of the whole model at a config's scale."""
    cfg = load(config, apply_env=False)
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(cfg, num_features).train()
    loss_fn = MultiHorizonLoss.from_config(cfg)
    batch = random_day_batch(num_stocks, cfg.data.sequence_length, model.num_features,
                             len(cfg.data.horizons), k=8, seed=0)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(batch), batch).total.backward()

    (sec,) = timed([step], repeats, warmup=repeats > 1)
    return {"case": f"model {config}", "F": model.num_features, "H": cfg.model.hidden_size,
            "T": cfg.data.sequence_length, "N": num_stocks, "params": sum(p.numel() for p in model.parameters()),
            "s/step": sec, "samples/s": num_stocks / sec}


def bench_vsn(num_features: int, hidden: int, tokens: int, repeats: int) -> dict[str, object]:
    """Vectorized VSN vs the per-feature loop, forward+backward, same weights and input."""
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(num_features, hidden, dropout=0.0).eval()
    x = torch.randn(tokens // 20, 20, num_features)

    def run(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        def go() -> None:
            vsn.zero_grad(set_to_none=True)
            out, _ = fn(x)
            out.square().sum().backward()
        return go

    with torch.no_grad():
        same = torch.allclose(vsn(x)[0], loop_reference(vsn, x)[0], rtol=1e-4, atol=1e-5)
    vec, loop = timed([run(vsn), run(lambda z: loop_reference(vsn, z))], repeats)
    return {"case": f"VSN F={num_features}", "F": num_features, "H": hidden, "tokens": tokens,
            "vectorized s": vec, "loop s": loop, "speed-up": loop / vec, "allclose": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer stocks/tokens and repeats")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 3
    print(f"machine: {platform.machine()} {platform.processor() or ''}, cpu_count={os.cpu_count()}, "
          f"torch {torch.__version__}, threads={torch.get_num_threads()}, quick={args.quick}")

    rows = [bench_model("smoke", 12, 256, reps),
            bench_model("production", 82, 200 if args.quick else 2000, 1 if not args.quick else reps)]
    print(f"\n{'case':<18} {'F':>4} {'H':>4} {'T':>3} {'N':>5} {'params':>11} {'s/step':>8} {'samples/s':>10}")
    for r in rows:
        print(f"{r['case']:<18} {r['F']:>4} {r['H']:>4} {r['T']:>3} {r['N']:>5} {r['params']:>11,} "
              f"{r['s/step']:>8.3f} {r['samples/s']:>10.1f}")

    tokens = 160 if args.quick else 640  # 8 / 32 stocks x T=20
    vrows = [bench_vsn(f, h, tokens, reps) for h in (16, 64, 256) for f in (82, 400)]
    print(f"\n{'case':<12} {'H':>4} {'tokens':>6} {'vectorized s':>13} {'loop s':>8} {'speed-up':>9} allclose")
    for r in vrows:
        print(f"{r['case']:<12} {r['H']:>4} {r['tokens']:>6} {r['vectorized s']:>13.4f} {r['loop s']:>8.4f} "
              f"{r['speed-up']:>8.2f}x {r['allclose']}")

if __name__ == "__main__":
    main()
