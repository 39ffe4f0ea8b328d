"""The torchrun worker of ``tests/test_distributed.py`` (a helper, not a test module).

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py ROOT`` runs
``fit`` three times in each of the 2 processes (gloo, the smoke panel, the process group made
here and kept for the three runs):

- ``full``: 2 epochs x 2 steps, uninterrupted;
- ``cut``: the same run, a stop request on rank 0 only at its 5th question (mid-epoch 1);
- ``guard``: rank 1's loss guard fires at its first step (``health.guards.loss.threshold=1e9``).

Rank 1 is given other run and log folders (``ROOT/rank1_runs``, ``ROOT/rank1_logs``): only rank 0
writes, so they must never exist. Each rank writes what each run raised to ``ROOT/out/rank{r}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from atft.config import Config, load
from atft.train.fit import fit


def overrides(root: Path, rank: int) -> list[str]:
    """The smoke run of ``rank`` under ``root`` (rank 1 points its run and log folders elsewhere)."""
    runs, logs = (root / "runs", root / "logs") if rank == 0 else (root / "rank1_runs", root / "rank1_logs")
    return [f"data.cache_dir={root / 'cache'}", f"train.run_dir={runs}", f"train.log_dir={logs}",
            "train.progress=false", "train.device=cpu", "train.max_epochs=2", "train.max_steps_per_epoch=2",
            "data.val_fraction=0.1", "data.test_fraction=0.1"]


def config(root: Path, rank: int, *extra: str) -> Config:
    return load("smoke", overrides(root, rank) + list(extra), env={})


class StopAt:
    """A stop request that turns True on its ``n``-th question."""

    def __init__(self, n: int) -> None:
        self.n, self.asked, self.requested = n, 0, "SIGTERM"

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.n


def main(root: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out: dict[str, str] = {}
    try:
        runs = {"full": (config(root, rank), None),
                "cut": (config(root, rank), StopAt(5) if rank == 0 else None),
                "guard": (config(root, rank, *(["health.guards.loss.threshold=1e9"] if rank == 1 else [])), None)}
        for name, (cfg, stop) in runs.items():
            try:
                fit(cfg, run_id=name, stop=stop)
                out[name] = "ok"
            except Exception as exc:  # recorded for the test to assert on
                out[name] = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()
    (root / "out").mkdir(exist_ok=True)
    (root / "out" / f"rank{rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
