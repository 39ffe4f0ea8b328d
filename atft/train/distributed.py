"""Data parallelism over trading days: the process group of a ``torchrun`` launch and what ``fit``
agrees on across its processes.

``torchrun --nproc_per_node K -m atft.cli train ...`` (or ``atft train --nproc K``, which wraps
``torch.distributed.run``) starts K processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set. ``session`` joins them (``gloo`` on the CPU, ``nccl`` on
CUDA, device ``cuda:LOCAL_RANK``) and always leaves with ``destroy_process_group``, error or not.
Without those variables (or with ``WORLD_SIZE=1``) it is a single process and every helper below
is the identity: a one-process run is the plain run, bit for bit.

What the K processes share (``fit``):

- the days: each rank's loader serves its share of the epoch's permutation
  (``atft.data.loader.DayBatchLoader(num_replicas, rank)``), the same number of steps per rank;
- the gradients: ``DistributedDataParallel`` averages them over the ranks; ``DistributedLoss``
  scales each rank's loss so that the step descends the mean of the per-rank losses over the ranks
  that have a target, and reports that mean (the same number on every rank);
- the decisions: a stop request or a live guard firing on any rank stops every rank at the same
  step boundary (``AgreedStop``); validation, early stopping and every file of the run are rank
  0's, its decisions broadcast (``Dist.broadcast``).

A rank's day is whole: the graph of a day never spans ranks, and there is no model parallelism.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from atft.errors import InputError
from atft.train.guards import Guards, GuardStop
from atft.train.loss import LossOutput

log = logging.getLogger("atft.train")
T = TypeVar("T")
_RANK_SEED_STRIDE = 1_000_003  # rank r's dropout stream: seed + r * stride (a prime: no overlap of small seeds)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream (dropout) after the model is built from ``seed``."""
    return int(seed) + _RANK_SEED_STRIDE * int(rank)


def env_world() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` as ``torchrun`` sets them; ``(0, 1, 0)`` when absent.

    Raises:
        InputError: a variable that is not an integer, or a rank outside the world.
    """
    try:
        rank, world, local = (int(os.environ.get(k, d)) for k, d in
                              (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")))
    except ValueError:
        raise InputError("RANK / WORLD_SIZE / LOCAL_RANK must be integers. Fix: launch with torchrun "
                         "(or atft train --nproc K), which sets them.") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} outside WORLD_SIZE={world}. Fix: launch with torchrun, which sets both.")
    return rank, world, local


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world_size``, on ``device``.

    Every method is a collective when ``active`` (all ranks must call it, in the same order) and
    the identity in a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        """One log line: the processes, the backend, this rank's device."""
        return (f"data parallel: {self.world_size} processes (backend {dist.get_backend()}), rank {self.rank} on "
                f"{self.device}; days sharded over the ranks, gradients averaged by DDP, rank 0 validates and writes")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, decides and writes the run's files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def any(self, flags: list[bool]) -> list[bool]:
        """Element-wise OR over the ranks."""
        if not self.active:
            return list(flags)
        t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` when active, else ``model``.

        Every parameter of ``ATFT_GAT_FAN`` reaches the loss in every configuration (switched-off
        parts are None; ``tests/test_distributed.py`` checks it), so ``find_unused_parameters``
        stays off (no extra graph traversal per step; a model that breaks this fails loudly at its
        second step).
        """
        if not self.active:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def _device_for(name: str, local_rank: int) -> torch.device:
    """``train.device`` of one rank: cuda (``"auto"`` with CUDA, ``"cuda"``) becomes ``cuda:LOCAL_RANK``."""
    dev = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                       ("cpu" if name == "auto" else name))
    return torch.device("cuda", local_rank) if dev.type == "cuda" else dev


@contextmanager
def session(device: str) -> Iterator[Dist]:
    """Join the ``torchrun`` process group (or none), leave it on exit even on error.

    Args:
        device: ``train.device`` ("auto", "cpu", "cuda"); under torchrun, cuda means
            ``cuda:LOCAL_RANK`` and the ``nccl`` backend, cpu the ``gloo`` backend.

    A process group already initialized by the caller is used as it is and left to the caller.
    """
    rank, world, local = env_world()
    if world == 1 and not dist.is_initialized():
        yield Dist()
        return
    dev = _device_for(device, local)
    owned = not dist.is_initialized()
    if owned:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    ctx = Dist(dist.get_rank(), dist.get_world_size(), local, dev)
    try:
        yield ctx
    finally:
        if owned:
            dist.destroy_process_group()


class DistributedLoss:
    """The training loss of one rank under data parallelism (the identity wrapper's sibling).

    DDP averages gradients over the K ranks. Each rank's loss is scaled by ``K / K_t`` (``K_t``:
    ranks whose batch has a valid target), so the step descends the mean of the per-rank losses
    over those ranks: a rank without a target adds an exact zero gradient (the loss keeps its
    gradient path) and dilutes nothing. The returned value is that mean, the same on every rank
    (what the loop logs and the guards read); its gradient is the rank's own. When no rank has a
    target, ``n_valid`` is 0 everywhere and every rank skips the step together.
    """

    def __init__(self, inner: Callable[[Any, Any], LossOutput], ctx: Dist) -> None:
        self.inner, self.ctx = inner, ctx

    def __call__(self, output: Any, batch: Any) -> LossOutput:
        lo = self.inner(output, batch)
        keys = list(lo.per_horizon)
        has = 1.0 if lo.n_valid > 0 else 0.0
        local = [has, float(lo.n_valid), float(lo.total.detach()) if has else 0.0]
        local += [float(lo.per_horizon[k].detach()) if has else 0.0 for k in keys]
        s = self.ctx.sum(local)
        ranks_with, n_valid = int(s[0]), int(s[1])
        if ranks_with == 0:
            return LossOutput(lo.total, lo.per_horizon, lo.pinball, lo.corr, 0, lo.n_valid_per_horizon)
        mean = s[2] / ranks_with
        scaled = lo.total * (self.ctx.world_size / ranks_with)
        total = scaled + (mean - scaled.detach())  # value: the mean over ranks; gradient: this rank's
        per_h = {k: torch.tensor(s[3 + i] / ranks_with) for i, k in enumerate(keys)}
        return LossOutput(total, per_h, lo.pinball, lo.corr, n_valid, lo.n_valid_per_horizon)


class AgreedStop:
    """The stop decision of every rank at a step boundary: True on all ranks when any rank got a
    stop request (Ctrl-C, SIGTERM: ``atft.train.interrupt.StopRequest``); ``GuardStop`` on all
    ranks when any rank's live guard fired (``Guards.defer``: a guard records its stop, this
    raises it), with the diagnosis of the lowest such rank.

    One ``all_reduce`` of two flags per call; called after every step and at the epoch's end.
    """

    def __init__(self, local: Callable[[], bool] | None, ctx: Dist) -> None:
        self.local, self.ctx = local, ctx
        self.guards: Guards | None = None
        self.requested: str | None = None

    def check_guards(self) -> None:
        """Raise ``GuardStop`` on every rank when a guard of any rank fired (one ``all_reduce``)."""
        pending = self.guards.pending if self.guards is not None else None
        if self.ctx.any([pending is not None])[0]:
            raise GuardStop(next(d for d in self.ctx.gather(pending) if d))

    def __call__(self) -> bool:
        pending = self.guards.pending if self.guards is not None else None
        stop, guard = self.ctx.any([bool(self.local is not None and self.local()), pending is not None])
        if guard:
            raise GuardStop(next(d for d in self.ctx.gather(pending) if d))
        if stop and self.requested is None:
            mine = str(getattr(self.local, "requested", None) or "") if self.local is not None else ""
            self.requested = next((r for r in self.ctx.gather(mine) if r), "a stop request on another rank")
        return stop

