"""Releasing accelerator memory between runs (the recovery plan's mini-train OOM)."""

from __future__ import annotations

import gc
import warnings

import torch


def release_cuda_memory() -> dict[str, float]:
    """synchronize -> gc.collect -> empty_cache; returns allocated/reserved MiB afterwards.

    On a machine without CUDA this still runs the garbage collector (the CPU side of
    "memory freed") and returns zeros.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        return {
            "allocated_mb": torch.cuda.memory_allocated() / 2**20,
            "reserved_mb": torch.cuda.memory_reserved() / 2**20,
        }
    gc.collect()
    return {"allocated_mb": 0.0, "reserved_mb": 0.0}


def live_tensor_count() -> int:
    """Number of live torch tensors the garbage collector can see (CPU-side leak check)."""
    n = 0
    with warnings.catch_warnings():  # deprecated torch objects warn when their type is probed
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor):
                    n += 1
            except ReferenceError:  # weakly-referenced objects may vanish during the scan
                continue
    return n
