"""Weight averaging: an exponential moving average (EMA) of the weights over the optimizer steps.

``train.ema_decay`` = ``beta`` > 0 keeps, next to the trained weights ``theta_s``::

    avg_0 = theta_1,    avg_s = beta * avg_{s-1} + (1 - beta) * theta_s       after every optimizer step

(Polyak-Ruppert averaging with an exponential window, time constant ``1 / (1 - beta)`` steps;
torch's ``swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``). The averaged weights are the
ones ``fit`` validates, keeps as ``best.pt`` and scores; the optimizer keeps stepping the trained
ones, and ``last.pt`` stores both so a resumed run continues the same average.

Why (low signal-to-noise targets): with ~1 % of the return variance predictable, the step noise of
Adam at the peak learning rate moves the weights of the linear parts (the skips) by about as much
as the signal fixes them; the best validation epoch of the embedded default is often the second,
when the cosine schedule has barely decayed. Averaging over ~100 steps cancels most of that noise
without waiting for the learning rate to fall. Whether it earns its place is decided on validation
(``docs/decisions.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """The EMA of ``model``'s parameters (``update`` after each optimizer step); buffers are kept as
    copied (this model's are constants: no batch norm).

    Args:
        model: the trained module (unwrapped: not the DDP wrapper).
        decay: ``beta`` in (0, 1).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}. Fix: set train.ema_decay "
                             "in (0, 1), or 0 for no averaging.")
        self.decay = float(decay)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        self._model = model

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model (same class and state-dict keys as the trained one)."""
        return self.averaged.module

    @property
    def steps(self) -> int:
        """Optimizer steps averaged so far."""
        return int(self.averaged.n_averaged)

    def update(self) -> None:
        """Fold the trained weights of this step into the average."""
        self.averaged.update_parameters(self._model)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "state_dict": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore an average saved by ``state_dict`` (a resumed run continues the same average).

        Raises:
            ValueError: the saved average used another decay (the window would change mid-run).
        """
        if float(state["decay"]) != self.decay:
            raise ValueError(f"the checkpoint averaged the weights with train.ema_decay={state['decay']}, this "
                             f"run has {self.decay}. Fix: resume with train.ema_decay={state['decay']}.")
        self.averaged.load_state_dict(state["state_dict"])
