"""Data parallelism (``atft.train.distributed``): 2 CPU processes with gloo on the smoke panel.

One torchrun launch (``tests/ddp_worker.py``) runs ``full``, ``cut`` (stopped on rank 0 only) and
``guard`` (a guard firing on rank 1 only); ``atft train --nproc 2 --resume`` continues ``cut`` in a
second launch. The DDP run's parameters after its 4 steps are compared with one process that
takes, at each step, the mean over the two ranks of the per-rank losses on the same days
(the objective whose gradient DDP's average is), with each rank's dropout stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from atft.cli import main
from atft.cli.train import without_nproc
from atft.config import Config
from atft.data.loader import DayBatchLoader
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.train.distributed import Dist, rank_seed
from atft.train.loss import MultiHorizonLoss
from atft.train.prepare import prepare
from atft.train.schedule import warmup_cosine
from atft.train.step import seed_everything
from tests.ddp_worker import config
from tests.test_loader import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # fp32, 4 steps of AdamW: DDP's bucketed all-reduce sums in another order than autograd
TIMING_KEYS = {"train/seconds", "train/samples_per_s", "train/batch_seconds"}


@dataclass
class Launched:
    root: Path
    out: dict[int, dict[str, str]]  # rank -> run name -> "ok" or the exception it raised


def _env() -> dict[str, str]:
    """This checkout first on the path of every process, one torch thread each."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Launched:
    root = tmp_path_factory.mktemp("ddp")
    prepare(config(root, 0))  # the embedded panel written once, before the processes read it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "ddp_worker.py"), str(root)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Launched(root, {r: json.loads((root / "out" / f"rank{r}.json").read_text()) for r in (0, 1)})


def _state(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)["state_dict"]


# ---------------------------------------------------------------- in one process


def _old_plan(loader: DayBatchLoader) -> list[list[int]]:
    """The single-process packing as it was before sharding (the reference of ``num_replicas=1``)."""
    order = np.random.default_rng([loader.seed, loader.epoch]).permutation(loader.dates.size)
    plan, start, total = [], 0, 0
    for i, pos in enumerate(order.tolist()):
        size = int(loader.day_sizes[pos])
        if i > start and total + size > loader.batch_size:
            plan.append(order[start:i].tolist())
            start, total = i, 0
        total += size
    return plan + ([order[start:].tolist()] if order.size else [])


@pytest.mark.parametrize("days", [7, 8])
def test_shards_are_distinct_days_of_the_epoch_with_equal_step_counts(days: int) -> None:
    valid = np.ones((days, 5), bool)
    valid[::3, 3:] = False  # days of 3 and 5 stocks
    panel, norm = tiny(valid)

    def loader(k: int, r: int) -> DayBatchLoader:
        ld = DayBatchLoader(panel, norm, np.arange(days), seq_len=1, batch_size=11, shuffle=True, seed=3,
                            num_replicas=k, rank=r)
        ld.set_epoch(2)
        return ld

    one = loader(1, 0)
    assert [p.tolist() for p in one._plan] == _old_plan(one)  # one process: the plain loader, unchanged
    shards = [loader(2, r) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])  # the same number of steps on every rank
    seen = [[d for b in s for d in b.meta["date_indices"]] for s in shards]
    assert all(b.num_stocks <= 11 or len(b.dates) == 1 for s in shards for b in s)
    order = [int(one.dates[p]) for p in np.random.default_rng([3, 2]).permutation(days)]
    padded = order + order[: days % 2]  # like DistributedSampler: the first days repeat
    assert seen[0] == padded[0::2] and seen[1] == padded[1::2]  # dealt round-robin, in the epoch's order
    assert sorted(seen[0] + seen[1])[: days] == sorted(order) or days % 2
    assert not set(seen[0]) & set(seen[1]) or days % 2


@pytest.mark.parametrize("overrides", [(), ("model.use_gat=false",), ("graph.enabled=false",),
                                       ("model.adaptive_norm=false",), ("model.linear_skip=true", "model.graph_skip=true")],
                         ids=["default", "no-gat", "no-graph", "no-fan", "skips"])
def test_every_parameter_reaches_the_loss(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    """Why DDP runs with ``find_unused_parameters=False``: every parameter has a gradient."""
    cfg = config(tmp_path, 0, *overrides)
    prepared = prepare(cfg)
    model = ATFT_GAT_FAN.from_config(cfg, prepared.num_features)
    batch = next(iter(prepared.loader("train")))
    MultiHorizonLoss.from_config(cfg)(model(batch), batch).total.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_one_process_is_the_identity() -> None:
    ctx = Dist()
    model = torch.nn.Linear(2, 1)
    assert not ctx.active and ctx.is_main and ctx.wrap(model) is model
    assert ctx.broadcast({"a": 1}) == {"a": 1} and ctx.gather(3) == [3]
    assert ctx.sum([1.0, 2.0]) == [1.0, 2.0] and ctx.any([True, False]) == [True, False]


# ---------------------------------------------------------------- two processes


def reference_params(cfg: Config, world: int = 2) -> dict[str, torch.Tensor]:
    """One process doing what ``world`` DDP ranks do: at each step the mean over ranks of each
    rank's loss on its own days (rank r's dropout stream), one backward, clip, AdamW, schedule."""
    t = cfg.train
    prepared = prepare(cfg)
    seed_everything(t.seed)
    model = ATFT_GAT_FAN.from_config(cfg, prepared.num_features)
    streams = []
    for r in range(world):
        torch.manual_seed(rank_seed(t.seed, r))
        streams.append(torch.get_rng_state())
    loss_fn = MultiHorizonLoss.from_config(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loaders = [prepared.loader("train", shuffle=True, num_replicas=world, rank=r) for r in range(world)]
    steps = min(len(loaders[0]), t.max_steps_per_epoch)
    sched = warmup_cosine(opt, t.warmup_steps, steps * t.max_epochs, t.min_lr_ratio)
    model.train()
    for epoch in range(t.max_epochs):
        for ld in loaders:
            ld.set_epoch(epoch)
        for batches in list(zip(*loaders, strict=True))[:steps]:
            losses = []
            for r, batch in enumerate(batches):
                torch.set_rng_state(streams[r])
                lo = loss_fn(model(batch), batch)
                streams[r] = torch.get_rng_state()
                assert lo.n_valid > 0
                losses.append(lo.total)
            opt.zero_grad(set_to_none=True)
            (torch.stack(losses).mean()).backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            sched.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_ddp_steps_equal_one_process_on_the_union_of_the_ranks_days(launched: Launched) -> None:
    assert launched.out[0]["full"] == launched.out[1]["full"] == "ok"
    ddp = _state(launched.root / "runs" / "full")
    ref = reference_params(config(launched.root, 0))  # (its own prepare: fit's loaders, nothing shared)
    assert ddp.keys() == ref.keys()
    worst = max(float((ddp[k] - ref[k]).abs().max()) for k in ref)
    assert worst <= ATOL, f"max |DDP - one process| = {worst:.3g} > {ATOL}"
    cfg = config(launched.root, 0)
    seed_everything(cfg.train.seed)
    init = ATFT_GAT_FAN.from_config(cfg, prepare(cfg).num_features)
    moved = max(float((ddp[k] - v).abs().max()) for k, v in init.state_dict().items())
    assert moved > 50 * ATOL  # the 4 steps moved the weights far more than the tolerance (2e-3 measured)


def test_only_rank_0_writes_the_run(launched: Launched) -> None:
    root = launched.root
    assert not (root / "rank1_runs").exists() and not (root / "rank1_logs").exists()
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["cut", "full", "guard"]
    assert sorted(p.name for p in (root / "logs").iterdir()) == ["train_cut.log", "train_full.log", "train_guard.log"]
    log = (root / "logs" / "train_full.log").read_text()
    assert "data parallel: 2 processes (backend gloo), rank 0 on cpu" in log and "rank 1 on" not in log
    assert "torch threads: 1 (train.num_threads)" in log
    history = [json.loads(x) for x in (root / "runs" / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]


def test_a_guard_on_one_rank_stops_every_rank(launched: Launched) -> None:
    a, b = launched.out[0]["guard"], launched.out[1]["guard"]
    assert a == b and a.startswith("GuardStop: health guard 'loss'"), (a, b)
    run = launched.root / "runs" / "guard"
    assert (run / "health.json").exists() and (run / "checkpoints" / "last.pt").exists()


def test_a_stop_on_one_rank_then_resume_under_torchrun_equals_the_uninterrupted_run(
        launched: Launched, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    root = launched.root
    for r in (0, 1):  # the request reached rank 0 only; both stopped at the same step boundary
        assert launched.out[r]["cut"].startswith("RunInterrupted: interrupted by SIGTERM at epoch 1, after batch 1; "
                                                 "continue with: atft train --nproc 2 --resume")
    ck = torch.load(root / "runs" / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and [r["mid_epoch"]["batches"] for r in ck["ranks"]] == [1, 1]
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    assert main(["train", "--nproc", "2", "--resume", str(root / "runs" / "cut")]) == 0
    out = capfd.readouterr().out
    assert f"run: {root / 'runs' / 'cut'}" in out and out.count("IC(test)") == 1  # rank 0 prints, once
    for name in ("last.pt", "best.pt"):
        a, b = _state(root / "runs" / "full", name), _state(root / "runs" / "cut", name)
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{name}: {differ}"
    ha = [json.loads(x) for x in (root / "runs" / "full" / "metrics.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (root / "runs" / "cut" / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(ha, hb, strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == {k: v for k, v in rb.items() if k not in TIMING_KEYS}


def test_resume_with_another_number_of_processes_is_an_input_error(launched: Launched,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(launched.root / "runs" / "full")]) == 2
    assert "trained by 2 process(es), this is 1" in capsys.readouterr().err


def test_nproc_is_dropped_from_the_relaunched_command() -> None:
    assert without_nproc(["-v", "train", "--nproc", "2", "--config", "smoke", "a=1"]) == ["-v", "train", "--config",
                                                                                         "smoke", "a=1"]
    assert without_nproc(["train", "--nproc=4", "--resume", "r"]) == ["train", "--resume", "r"]


def test_nproc_under_torchrun_is_an_input_error(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2", "--config", "smoke"]) == 2
    assert "--nproc under torchrun" in capsys.readouterr().err
