"""GPU gates (cuda): memory freed after a mini-train, utilization during a short run, no host
synchronisation in the model's training forward / backward / optimizer step.

Skipped without a GPU unless ``--require-cuda`` (then they fail). Run alone: xdist_group("cuda").
"""

from __future__ import annotations

import time

import pytest
import torch

from atft.health.gpu import (
    NvmlSampler,
    check_gpu_utilization,
    check_memory_freed,
    device_uuid,
    measure_cuda_memory,
)
from atft.train.memory import release_cuda_memory

pytestmark = [pytest.mark.cuda, pytest.mark.xdist_group("cuda")]


@pytest.fixture
def cuda_model(atft_config, atft_prepared):
    from atft.model.atft_gat_fan import ATFT_GAT_FAN

    torch.manual_seed(atft_config.train.seed)
    model = ATFT_GAT_FAN.from_config(atft_config, atft_prepared.num_features).cuda()
    yield model
    del model
    release_cuda_memory()


def test_cuda_memory_freed_after_mini_train(cuda_model, atft_prepared, atft_config, health):
    from atft.train.loss import MultiHorizonLoss

    loss_fn = MultiHorizonLoss.from_config(atft_config)
    batches = [atft_prepared.day_batch("train", i).to("cuda") for i in range(4)]
    state: dict[str, object] = {}

    def step(i: int) -> None:
        opt = state.setdefault("opt", torch.optim.AdamW(cuda_model.parameters(), lr=1e-4))
        opt.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        loss_fn(cuda_model(batches[i % 4]), batches[i % 4]).total.backward()
        opt.step()  # type: ignore[attr-defined]

    release_cuda_memory()
    base_before_opt = torch.cuda.memory_allocated() / 2**20
    m = measure_cuda_memory(step, steps=atft_config.health.mini_train_steps * 2)
    state.clear()
    cuda_model.zero_grad(set_to_none=True)
    after = release_cuda_memory()["allocated_mb"]
    health.check(check_memory_freed(base_before_opt, after, m["per_step_mb"], m["peak_mb"],
                                    atft_config.health.cuda_mem_tolerance_mb))


def test_gpu_utilization_during_training(cuda_model, atft_prepared, atft_config, health):
    from atft.train.loss import MultiHorizonLoss

    loss_fn = MultiHorizonLoss.from_config(atft_config)
    opt = torch.optim.AdamW(cuda_model.parameters(), lr=1e-4)
    loader = atft_prepared.loader("train", shuffle=True)

    def run(max_steps: int) -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        for i, b in enumerate(loader):
            if i >= max_steps:
                break
            b = b.to("cuda", non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=atft_config.train.bf16):
                lo = loss_fn(cuda_model(b), b)
            opt.zero_grad(set_to_none=True)
            lo.total.backward()
            opt.step()
            n += b.num_stocks
        torch.cuda.synchronize()
        return n, time.perf_counter() - t0

    run(5)  # warm-up (cuDNN / allocator)
    with NvmlSampler(device_uuid(0)) as sampler:
        n, secs = run(60)
    health.check(check_gpu_utilization(sampler.samples, atft_config.health.gpu_util, n / secs))


def test_training_step_does_not_synchronise_with_the_host(cuda_model, atft_prepared, atft_config):
    """``set_sync_debug_mode("error")`` around forward, backward, clipping and the AdamW step: any
    ``.item()`` / ``nonzero`` / boolean-mask indexing there raises. The batch is validated on the
    CPU where it is built (the loader); the loss reads its valid counts on the host once, between
    forward and backward, outside the checked region (its documented single sync)."""
    from atft.train.loss import MultiHorizonLoss

    loss_fn = MultiHorizonLoss.from_config(atft_config)
    opt = torch.optim.AdamW(cuda_model.parameters(), lr=1e-4)
    batch = atft_prepared.day_batch("train", 0).to("cuda")
    cuda_model.train()
    for _ in range(2):  # the second step runs with the optimizer state already allocated
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = cuda_model(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        lo = loss_fn(out, batch)
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.zero_grad(set_to_none=True)
            lo.total.backward()
            torch.nn.utils.clip_grad_norm_(cuda_model.parameters(), 1.0)
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
