"""Live health guards inside ``fit``: the recovery plan's Step 4 (``tail -f train.log | grep yhat_std``),
automated, so a run that trains nothing stops in minutes instead of three days.

Keras' ``TerminateOnNaN`` and Lightning's ``EarlyStopping(check_finite=True, divergence_threshold=...)``
watch the loss only. A model can train on a finite, positive, even falling loss and still learn
nothing a quant can use: a head that forecasts the same number for every stock (the loss falls
to the targets' mean), a learning rate so low nothing moves, an optimizer that never steps, a
graph path whose output is multiplied by zero, a loader whose targets are all missing. Each has
its own signal here, read from what the training step already computes:

========== ================================================ =========================================
guard      signal (every ``health.guard_every`` steps)       default: threshold, patience, action
========== ================================================ =========================================
loss       loss finite and > threshold, with a gradient     0, 1, stop (every step: the loop syncs it
           path (every step)                                anyway; an epoch without a step is NaN)
yhat_std   per-horizon cross-sectional std of the point      1e-4, 3, stop when EVERY horizon is at or
           forecast in return units (per day, averaged)      below it (a collapsed head)
grad_norm  gradient norm per top-level part of the model     0, 3, warn (a part at exactly 0 is dead)
update     ||dtheta|| / ||theta|| of the optimizer step      1e-6, 3, warn (lr too low, no step)
skipped    share of batches skipped for having no target     0.5, 1, warn (per ``guard_every`` batches)
graph      GAT's effect: mean |forecast change| with the     1e-3, 2, warn (every
           GAT's edges removed, over the forecast spread     ``health.guard_graph_every`` steps)
========== ================================================ =========================================

Cost: no extra forward pass and no host synchronisation on ordinary steps (the loss is already
synced by the loop); on a guard step one norm per part, one copy of the parameters and a few
reductions of the forward's own output; the graph measurement is two eval forwards of one held
batch every ``guard_graph_every`` steps. ``bench/bench_guards.py`` measures on vs off.

A ``stop`` raises ``GuardStop`` with a one-line diagnosis (signal, values, step, likely causes);
``fit`` then keeps ``last.pt``, writes ``runs/<id>/health.json`` (every guard's series) and
``atft train`` exits 3. A ``warn`` logs the line and emits an ``AtftWarning`` once per guard.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from atft.config import GuardRule, HealthConfig
from atft.data.batch import DayBatch
from atft.errors import AtftWarning
from atft.model.atft_gat_fan import part_parameters

log = logging.getLogger("atft.train")

CAUSES = {
    "loss": "the loss reads no prediction (the unwrapped prediction dict), no target matched, or a "
            "detached tensor; lower train.lr if it diverged; check the data (atft check-data)",
    "yhat_std": "head init (model.head_init_std), a learning rate that drives the head to the mean, "
                "normalization flattening the inputs (atft check-data: constant features)",
    "grad_norm": "the part's output never reaches the loss (bypassed, multiplied by 0, detached)",
    "update_ratio": "train.lr far too low, an optimizer that never steps, or frozen parameters",
    "skipped": "targets missing for most days (atft check-data target_nan_ratio), a wrong target template",
    "graph": "the graph bypassed (BYPASS_GAT_COMPLETELY / DISABLE_GRAPH_BUILDER), no edges "
             "(graph.threshold, graph.min_obs), or the GAT output zeroed",
}


class GuardStop(RuntimeError):
    """A guard with action "stop" fired: the run must end (``atft train`` exits 3)."""

    def __init__(self, diagnosis: str) -> None:
        super().__init__(diagnosis)
        self.diagnosis = diagnosis


@dataclass
class _State:
    rule: GuardRule
    over: int = 0  # consecutive guard checks over the bound
    warned: bool = False
    series: list[dict[str, Any]] = field(default_factory=list)


def per_day_std(point: Tensor, day_index: Tensor, num_days: int) -> Tensor:
    """Cross-sectional (population) std of ``point`` per day, averaged over the days.

    Shapes:
        point ``[N]``, day_index ``[N]`` -> scalar tensor (no host sync).
    """
    x = point.detach().double()
    ones = torch.ones_like(x)
    n = torch.zeros(num_days, dtype=x.dtype, device=x.device).index_add_(0, day_index, ones).clamp_min(1.0)
    mean = torch.zeros_like(n).index_add_(0, day_index, x) / n
    var = torch.zeros_like(n).index_add_(0, day_index, (x - mean[day_index]) ** 2) / n
    return var.sqrt().mean()


class Guards:
    """The live guards of one run (module docstring).

    Args:
        cfg: ``cfg.health`` (``guard_every``, ``guard_graph_every``, ``guards``).
        horizons: output keys, in order; scale: per-horizon factor to return units.
        parts: the model's named top-level parts (``ATFT_GAT_FAN.parts()``; None = off by design).
        held: a batch for the graph measurement (the run's first training batch); None = no graph guard.
        step: the global step to start counting from (a resumed run).
        defer: record a stop in ``pending`` instead of raising (data parallelism: the ranks
            agree on it at the step boundary, ``atft.train.distributed.AgreedStop``).
    """

    def __init__(self, cfg: HealthConfig, horizons: Sequence[str], scale: Sequence[float],
                 parts: dict[str, Any], held: DayBatch | None = None, step: int = 0, defer: bool = False) -> None:
        g = cfg.guards
        self.every = int(cfg.guard_every)
        self.graph_every = int(cfg.guard_graph_every)
        self.keys, self.scale = list(horizons), [float(s) for s in scale]
        self.parts = {k: part_parameters(m) for k, m in parts.items() if part_parameters(m)}
        self.held = held
        self.step = step
        self.state = {name: _State(getattr(g, name)) for name in ("loss", "yhat_std", "grad_norm", "update_ratio",
                                                                  "skipped", "graph")}
        self._skipped = self._seen = 0
        self._snapshot: list[Tensor] | None = None
        self.defer = defer
        self.pending: str | None = None  # the first deferred stop's diagnosis

    # ------------------------------------------------------------------ what the step asks
    @property
    def due(self) -> bool:
        """This step is a guard step (signals measured after its backward and its update)."""
        return self.every > 0 and self.step % self.every == 0

    def on_skipped(self) -> None:
        self._skipped += 1
        self._seen += 1
        self._window()

    def _window(self) -> None:
        """Every ``guard_every`` batches (stepped or skipped): the share that was skipped."""
        if self.every <= 0 or self._seen < self.every:
            return
        share = self._skipped / self._seen
        self._record("skipped", {"share": share}, share > self.state["skipped"].rule.threshold,
                     f"{share:.0%} of the last {self._seen} batches were skipped (no valid target) at step {self.step}")
        self._skipped = self._seen = 0

    def on_no_grad_path(self) -> None:
        self._fire("loss", 1.0, f"the loss has no gradient path at step {self.step} (a detached or constant "
                                f"tensor)", force=True)

    def on_backward(self, model: nn.Module, out: dict[str, Any], batch: DayBatch) -> None:
        """Guard step, after backward, before the update: yhat_std per horizon, gradient norm per part."""
        num_days = max(len(batch.dates), 1)
        stds = torch.stack([per_day_std(out["point"][k], batch.day_index, num_days) * s
                            for k, s in zip(self.keys, self.scale, strict=True)])
        norms = {name: torch.linalg.vector_norm(torch.stack(
                    [p.grad.detach().float().norm() for p in params if p.grad is not None]
                    or [torch.zeros((), device=stds.device)])) for name, params in self.parts.items()}
        values = torch.cat([stds.float().cpu(), torch.stack(list(norms.values())).cpu()]) if norms else stds.float().cpu()
        v = values.tolist()  # the guard step's one host sync
        ystd = dict(zip(self.keys, v[: len(self.keys)], strict=True))
        gn = dict(zip(norms, v[len(self.keys):], strict=True))
        self._record("yhat_std", ystd, all(x <= self.state["yhat_std"].rule.threshold for x in ystd.values()),
                     f"yhat_std in return units {_fmt(ystd)} at or below {self.state['yhat_std'].rule.threshold:g} "
                     f"on every horizon at step {self.step}")
        dead = [n for n, x in gn.items() if not x > self.state["grad_norm"].rule.threshold]
        self._record("grad_norm", gn, bool(dead), f"gradient norm of {dead} at step {self.step}: {_fmt(gn)}")
        self._snapshot = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    def on_update(self, model: nn.Module) -> None:
        """Guard step, after the optimizer step: relative size of the update."""
        if self._snapshot is None:
            return
        params = [p.detach() for p in model.parameters() if p.requires_grad]
        d = torch.linalg.vector_norm(torch.stack([(a - b).float().norm() for a, b in zip(params, self._snapshot, strict=True)]))
        n = torch.linalg.vector_norm(torch.stack([b.float().norm() for b in self._snapshot]))
        ratio = float(d / n.clamp_min(1e-30))
        self._snapshot = None
        self._record("update_ratio", {"ratio": ratio}, not ratio > self.state["update_ratio"].rule.threshold,
                     f"update size ||dtheta||/||theta|| = {ratio:.3g} at step {self.step}")

    def on_step_end(self, loss: float, model: nn.Module) -> None:
        """Every stepped batch: the loss (already a float); the window's skipped share and the graph."""
        self._seen += 1
        bad = not (math.isfinite(loss) and loss > self.state["loss"].rule.threshold)
        if bad or self.due:  # recorded on guard steps (the series) and whenever it goes wrong
            self._record("loss", {"loss": loss}, bad, f"training loss {loss} at step {self.step}")
        self._window()
        if self.held is not None and self.graph_every > 0 and self.step % self.graph_every == 0:
            self._graph(model)
        self.step += 1

    def on_epoch_end(self, epoch: int, steps: int, loss: float) -> None:
        """An epoch without one optimizer step has no loss: a non-finite loss."""
        if steps == 0 or not math.isfinite(loss):
            self._fire("loss", loss, f"epoch {epoch} ended with {steps} optimizer steps and loss {loss}", force=True)

    # ------------------------------------------------------------------ the graph path
    @torch.no_grad()
    def _graph(self, model: nn.Module) -> None:
        model = model.module if isinstance(model, DistributedDataParallel) else model
        gat = getattr(model, "gat", None)
        if gat is None or self.held is None:
            return
        was = model.training
        model.eval()
        try:
            batch = self.held.to(next(model.parameters()).device)
            full = model(batch)
            cut = model(batch, drop_edges=("gat",))
        finally:
            model.train(was)
        effect = {}
        for k in self.keys:
            spread = float(full["point"][k].std()) or 1e-30
            effect[k] = float((full["point"][k] - cut["point"][k]).abs().mean()) / spread
        worst = max(effect.values())
        self._record("graph", effect, not worst > self.state["graph"].rule.threshold,
                     f"removing the GAT's edges moves the forecasts by {worst:.3g} x their spread at step {self.step}")

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, name: str, values: dict[str, float], over: bool, what: str) -> None:
        st = self.state[name]
        st.series.append({"step": self.step, **values, "over": over})
        st.over = st.over + 1 if over else 0
        if over and st.over >= max(1, st.rule.patience):
            self._fire(name, values, what)

    def _fire(self, name: str, values: Any, what: str, force: bool = False) -> None:
        st = self.state[name]
        if st.rule.action == "off" and not force:
            return
        st.series.append({"step": self.step, "fired": st.rule.action if not force else "stop"})
        line = f"health guard '{name}' ({st.rule.action if not force else 'stop'}): {what}. Likely causes: {CAUSES[name]}"
        if force or st.rule.action == "stop":
            log.error(line)
            if self.defer:
                self.pending = self.pending or line
                return
            raise GuardStop(line)
        log.warning(line)
        if not st.warned:
            st.warned = True
            warnings.warn(line, AtftWarning, stacklevel=2)

    def resume_from(self, previous: dict[str, Any]) -> None:
        """Continue the series of a resumed run's ``health.json``."""
        for name, g in previous.get("guards", {}).items():
            if name in self.state:
                self.state[name].series = list(g.get("series", [])) + self.state[name].series

    def series(self) -> dict[str, Any]:
        """Every guard's rule and series (``runs/<id>/health.json``)."""
        return {"guard_every": self.every, "guard_graph_every": self.graph_every, "last_step": self.step,
                "guards": {n: {"threshold": s.rule.threshold, "patience": s.rule.patience, "action": s.rule.action,
                               "series": s.series} for n, s in self.state.items()}}


def _fmt(values: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:.3g}" for k, v in values.items()) + "}"
