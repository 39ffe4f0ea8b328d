"""GPU checks: CUDA memory freed after a mini-train, utilization during a short run (NVML).

The verdict functions take measured numbers so they are tested on CPU with planted figures;
``measure_*`` functions do the measuring on a GPU runner.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atft.health.result import CheckResult


def check_memory_freed(baseline_mb: float, after_mb: float, per_step_mb: Sequence[float],
                       peak_mb: float, tolerance_mb: float) -> list[CheckResult]:
    """Allocated memory back to the pre-run baseline (within tolerance); no growth per step."""
    growth = (per_step_mb[-1] - per_step_mb[len(per_step_mb) // 2]) if len(per_step_mb) >= 2 else 0.0
    return [
        CheckResult.compare("cuda_memory_freed_mb", after_mb - baseline_mb, tolerance_mb, "<=",
                            f"{after_mb - baseline_mb:.1f} MiB still allocated after the run (baseline "
                            f"{baseline_mb:.1f}, peak {peak_mb:.1f}). Fix: drop references to losses/outputs/"
                            "optimizer and call atft.train.memory.release_cuda_memory().",
                            examples=[f"peak={peak_mb:.1f}MiB"]),
        CheckResult.compare("cuda_memory_step_growth_mb", growth, tolerance_mb, "<=",
                            f"allocated memory grew {growth:.1f} MiB over the second half of the steps: "
                            "something accumulates per step (loss tensors kept in a list?).",
                            examples=[f"per-step MiB={[round(x, 1) for x in per_step_mb]}"]),
    ]


def check_gpu_utilization(samples: Sequence[float], threshold: float, samples_per_s: float) -> list[CheckResult]:
    """Median NVML utilization (0..1) above threshold; p10 and throughput reported."""
    if not samples:
        return [CheckResult.compare("gpu_utilization_median", float("nan"), threshold, ">",
                                    "no NVML utilization samples were taken")]
    s = sorted(samples)
    med = statistics.median(s)
    p10 = s[max(0, int(0.1 * (len(s) - 1)))]
    return [CheckResult.compare(
        "gpu_utilization_median", med, threshold, ">",
        f"median GPU utilization {med:.0%} (p10 {p10:.0%}) at {samples_per_s:.0f} samples/s: the GPU "
        "waits on the loader or the batch is too small. Fix: larger train.batch_size, fewer host syncs.",
        examples=[f"p10={p10:.3f}", f"samples/s={samples_per_s:.1f}", f"n={len(s)}"])]


@dataclass
class NvmlSampler:
    """Background thread sampling NVML device utilization of the GPU with a given UUID.

    NVML ignores CUDA_VISIBLE_DEVICES, so the device is picked by the UUID torch reports.
    """

    uuid: str
    interval_s: float = 0.05
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> NvmlSampler:
        import pynvml

        pynvml.nvmlInit()
        handle = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            u = pynvml.nvmlDeviceGetUUID(h)
            u = u.decode() if isinstance(u, bytes) else u
            if u.replace("GPU-", "") == self.uuid.replace("GPU-", ""):
                handle = h
        if handle is None:
            raise RuntimeError(f"no NVML device with UUID {self.uuid}")

        def loop() -> None:
            while not self._stop.is_set():
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                time.sleep(self.interval_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import pynvml

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        pynvml.nvmlShutdown()


def device_uuid(index: int = 0) -> str:
    import torch

    return str(torch.cuda.get_device_properties(index).uuid)


def measure_cuda_memory(step: Callable[[int], None], steps: int) -> dict[str, Any]:
    """Run ``step(i)`` ``steps`` times on CUDA; baseline/after/per-step/peak allocated MiB."""
    import torch

    from atft.train.memory import release_cuda_memory

    release_cuda_memory()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() / 2**20
    per_step = []
    for i in range(steps):
        step(i)
        torch.cuda.synchronize()
        per_step.append(torch.cuda.memory_allocated() / 2**20)
    peak = torch.cuda.max_memory_allocated() / 2**20
    return {"baseline_mb": baseline, "per_step_mb": per_step, "peak_mb": peak}
