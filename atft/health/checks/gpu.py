"""GPU checks (cuda): CUDA memory freed after a mini-train, GPU utilization during training.

They run on the model under test and THE training step; without a GPU the suite skips them (or
fails them under ``--require-cuda``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from atft.config import Config
from atft.data.batch import DayBatch
from atft.health.context import HealthContext
from atft.health.gpu import (
    NvmlSampler,
    check_gpu_utilization,
    check_memory_freed,
    device_uuid,
    measure_cuda_memory,
)
from atft.health.registry import health_check
from atft.health.result import CheckResult
from atft.train.memory import release_cuda_memory

KEPT: list[Any] = []  # the planted leak of cuda_memory_freed's fault (tensors a buggy loop keeps)


def _leaky_step(ctx: HealthContext) -> HealthContext:
    inner = ctx.resolve("train_step")

    def step(model: nn.Module, batch: DayBatch, optimizer: torch.optim.Optimizer) -> Any:
        loss = inner(model, batch, optimizer)
        KEPT.append(torch.ones(4 << 20, device="cuda"))  # 16 MiB kept per step, as a loss list would
        return loss

    return ctx.replace(train_step=step)


@health_check(area="gpu", marker="cuda", fault=_leaky_step)
def cuda_memory_freed(model: nn.Module, train_batches: list[DayBatch], train_step: Any, cfg: Config) -> list[CheckResult]:
    """CUDA memory_allocated returns to the pre-run baseline after a mini-train; no growth per step."""
    model = model.cuda()
    batches = [b.to("cuda") for b in train_batches]
    state: dict[str, Any] = {}

    def step(i: int) -> None:
        opt = state.setdefault("opt", torch.optim.AdamW(model.parameters(), lr=cfg.train.lr))
        train_step(model, batches[i % len(batches)], opt)

    release_cuda_memory()
    base = torch.cuda.memory_allocated() / 2**20
    m = measure_cuda_memory(step, steps=cfg.health.mini_train_steps * 2)
    state.clear()
    model.zero_grad(set_to_none=True)
    after = release_cuda_memory()["allocated_mb"]
    return check_memory_freed(base, after, m["per_step_mb"], m["peak_mb"], cfg.health.cuda_mem_tolerance_mb)


def _sleepy_step(ctx: HealthContext) -> HealthContext:
    inner = ctx.resolve("train_step")

    def step(model: nn.Module, batch: DayBatch, optimizer: torch.optim.Optimizer) -> Any:
        time.sleep(0.05)  # a loader that starves the GPU
        return inner(model, batch, optimizer)

    return ctx.replace(train_step=step)


@health_check(area="gpu", marker="cuda", fault=_sleepy_step)
def gpu_utilization(model: nn.Module, prepared: Any, train_step: Any, cfg: Config) -> list[CheckResult]:
    """NVML utilization of the GPU (picked by UUID) during training: median > health.gpu_util."""
    model = model.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loader = prepared.loader("train", shuffle=True)

    def run(max_steps: int) -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        for i, b in enumerate(loader):
            if i >= max_steps:
                break
            train_step(model, b.to("cuda", non_blocking=True), opt)
            n += b.num_stocks
        torch.cuda.synchronize()
        return n, time.perf_counter() - t0

    run(5)  # warm-up (cuDNN / allocator)
    with NvmlSampler(device_uuid(0)) as sampler:
        n, secs = run(60)
    return check_gpu_utilization(sampler.samples, cfg.health.gpu_util, n / secs)


def _syncing_forward(ctx: HealthContext) -> HealthContext:
    from atft.health.checks.model import Faulty

    def fault(inner: nn.Module, batch: DayBatch) -> Any:
        out = inner(batch)
        float(out["point"][next(iter(out["point"]))].sum())  # a host read inside the forward
        return out

    return ctx.replace(model=Faulty(ctx.resolve("model"), fault))


@health_check(area="gpu", marker="cuda", fault=_syncing_forward)
def no_host_sync(model: nn.Module, train_batches: list[DayBatch], loss_fn: Any) -> CheckResult:
    """No host synchronisation in the training forward, backward, clipping and optimizer step
    (``torch.cuda.set_sync_debug_mode("error")``); the loss's one documented host read (its valid
    counts) stays outside the checked region."""
    model = model.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = train_batches[0].to("cuda")
    model.train()
    error = ""
    for _ in range(2):  # the second step runs with the optimizer state already allocated
        torch.cuda.synchronize()
        try:
            torch.cuda.set_sync_debug_mode("error")
            try:
                out = model(batch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            lo = loss_fn(out, batch)
            torch.cuda.set_sync_debug_mode("error")
            try:
                opt.zero_grad(set_to_none=True)
                lo.total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        except RuntimeError as exc:
            error = str(exc).splitlines()[0]
            break
    torch.cuda.synchronize()
    return CheckResult.compare("cuda_host_syncs", float(bool(error)), 0.0, "==",
                               f"the training step synchronises with the host: {error}. Fix: no .item(), "
                               "bool(tensor), nonzero or boolean-mask indexing inside forward / backward.")
