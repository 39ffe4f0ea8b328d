"""Model-side checks: horizon keys, head spread, one training step, GAT not bypassed, leaks.

Each function returns ``CheckResult`` objects (figure, threshold, verdict); none asserts.
"""

from __future__ import annotations

import gc
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from atft.data.batch import DayBatch
from atft.eval.spread import eval_forward, head_spread
from atft.health.result import CheckResult
from atft.horizons import Horizons, output_key
from atft.model.atft_gat_fan import part_parameters
from atft.train.memory import live_tensor_count


def _symdiff_result(name: str, want: Iterable[str], got: Iterable[str], what: str) -> CheckResult:
    w, g = set(want), set(got)
    diff = sorted(w ^ g)
    return CheckResult.compare(
        name, float(len(diff)), 0.0, "==",
        f"{what}: missing {sorted(w - g)}, unexpected {sorted(g - w)} (symmetric difference {diff}); "
        "this is how 'No matching horizons found' turned into a zero loss. Fix: make "
        "data.horizons, data.target_template and the data's target columns agree.",
        examples=diff)


def check_horizon_keys(horizons: Horizons, dataset_columns: Sequence[str], model_out: Mapping[str, Any],
                       loss_keys: Iterable[str], metric_keys: Iterable[str]) -> list[CheckResult]:
    """model output keys == loss keys == metric keys == configured horizons == dataset targets."""
    preds = model_out.get("predictions")
    pred_keys = list(preds.keys()) if isinstance(preds, Mapping) else []
    present = horizons.target_horizons_in(dataset_columns)
    return [
        # extra horizons in the data are fine; a configured horizon without its column is not
        _symdiff_result("horizon_keys_dataset", horizons.keys,
                        [output_key(h) for h in present if output_key(h) in horizons.keys],
                        f"dataset target columns (template '{horizons.template}') vs configured horizons"),
        _symdiff_result("horizon_keys_model", horizons.keys, pred_keys,
                        "model output['predictions'] keys vs configured horizons"),
        _symdiff_result("horizon_keys_loss", horizons.keys, loss_keys, "loss terms vs configured horizons"),
        _symdiff_result("horizon_keys_metrics", horizons.keys, metric_keys,
                        "metric keys vs configured horizons"),
    ]


def check_head_spread(model: torch.nn.Module, batch: DayBatch, horizons: Horizons,
                      threshold: float = 0.001, scale: Sequence[float] | None = None,
                      ) -> tuple[list[CheckResult], dict[str, list[float]]]:
    """Per horizon: cross-sectional std of the point forecast > threshold; quantiles ordered
    (``atft.eval.spread.head_spread``, the figure ``atft diagnose-head`` prints).

    ``scale`` (``Normalizer.target_scale``) converts the model's training scale to return
    units, the units of the recovery plan's ``yhat_std > 0.001``.
    Returns the results and the point forecasts per horizon in return units (for histograms).
    Shapes: predictions ``[N, Q]``, point ``[N]`` per horizon (a single-day batch).
    """
    spread = head_spread(model, batch, getattr(model, "quantiles", None), scale)
    results, samples = [], {}
    for key in horizons.keys:
        hs = spread.horizons[key]
        std = hs.point_std
        results.append(CheckResult.compare(
            f"head_std[{key}]", std, threshold, ">",
            f"{key}: cross-sectional std of the point forecast is {std:.3g} <= {threshold}: constant "
            "predictions (yhat_std=0). Fix: check the head init (model.head_init_std), the learning "
            "rate, and that normalization does not flatten the inputs (atft check-data)."))
        results.append(CheckResult.compare(
            f"quantiles_ordered[{key}]", hs.ordered_share, 1.0, "==",
            f"{key}: only {hs.ordered_share:.1%} of rows have ordered quantiles. Fix: the head must keep "
            "quantiles monotone (median +/- positive offsets)."))
        samples[key] = hs.point
    return results, samples


class GradRecorder:
    """Records, per parameter, the gradient accumulated during a step (post-accumulate hooks), so
    the norms are seen whatever the step does with ``.grad`` afterwards (clip, zero_grad)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.sq: dict[int, float] = {}
        self.handles = [p.register_post_accumulate_grad_hook(self._hook)
                        for p in model.parameters() if p.requires_grad]

    def _hook(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            self.sq[id(p)] = self.sq.get(id(p), 0.0) + float(p.grad.detach().float().pow(2).sum())

    def norm(self, part: Any) -> float:
        """Gradient norm of a part (a module, a parameter, or None: 0)."""
        sq = sum(self.sq.get(id(p), 0.0) for p in part_parameters(part))
        return math.sqrt(sq) if math.isfinite(sq) else float("nan")

    @property
    def any_gradient(self) -> bool:
        return any(v > 0 for v in self.sq.values())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _as_float(loss: Any) -> float:
    """The loss a step returned (a tensor, a number, or an object with ``.loss``) as a float."""
    if torch.is_tensor(loss):
        return float(loss.detach()) if loss.numel() == 1 else float("nan")
    value = getattr(loss, "loss", loss)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def atft_step(loss_fn: Callable[..., Any], *, grad_clip: float = 0.0, bf16: bool = False) -> Callable[..., Any]:
    """THE training step (``atft.train.step.train_step``, what ``train_epoch`` calls) bound to
    ``loss_fn``, on the device of the model's parameters."""
    from atft.train.step import train_step

    def step(model: torch.nn.Module, batch: DayBatch, optimizer: torch.optim.Optimizer) -> float:
        device = next(model.parameters()).device
        return train_step(model, batch, loss_fn, optimizer, grad_clip=grad_clip, device=device, bf16=bf16).loss

    return step


def model_parts(model: torch.nn.Module) -> dict[str, Any]:
    """Named parts for per-part gradient norms: atft's ``parts()`` (every top-level part; the graph
    path's are None when it is switched off), or a user's top-level children holding parameters."""
    parts = getattr(model, "parts", None) or getattr(model, "children_to_check", None)
    if callable(parts):
        return dict(parts())
    return {n: m for n, m in model.named_children() if part_parameters(m)}


def update_ratio(before: list[torch.Tensor], model: torch.nn.Module, steps: int) -> float:
    """Mean relative size of an update per step: ``||theta_after - theta_before|| / ||theta_before|| / steps``."""
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    d = math.sqrt(sum(float((a - b).float().pow(2).sum()) for a, b in zip(after, before, strict=True)))
    n = math.sqrt(sum(float(b.float().pow(2).sum()) for b in before))
    return d / max(n, 1e-30) / max(steps, 1)


def _snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def check_training_step(model: torch.nn.Module, batch: DayBatch, loss_fn: Callable[..., Any],
                        allow_gat_bypass: bool = False, *, step: Callable[..., Any] | None = None,
                        lr: float = 1e-3, min_update: float = 1e-6) -> list[CheckResult]:
    """Two calls of THE training step: loss finite and > 0, a gradient path, gradient in every part,
    parameters that move.

    ``step(model, batch, optimizer) -> loss`` defaults to atft's ``train_step`` with ``loss_fn``
    (the function ``train_epoch`` calls); a user's step replaces it. Gradients are recorded as
    they accumulate (``GradRecorder``), so the step may clip or clear them afterwards. Parts are
    the model's top-level parts (``model_parts``); a part counts as learning if it gets gradient
    in either step (a part behind a zero-initialised gate, like the FAN/SAN branch's ReZero scale,
    gets none before the gate moves). The GAT's (and its fusion gate's) must be > 0 unless
    ``allow_gat_bypass``. The update size ``||dtheta|| / ||theta||`` per step must exceed ``min_update``
    (an optimizer that never steps, or a learning rate of 1e-12, leaves it at ~0).
    """
    step = step or atft_step(loss_fn)
    rec = GradRecorder(model)
    before = _snapshot(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    torch.manual_seed(0)
    error, values = "", []
    try:
        for _ in range(2):
            values.append(_as_float(step(model, batch, opt)))
    except RuntimeError as exc:  # e.g. backward of a loss without a gradient path
        values.append(float("nan"))
        error = f" The step raised: {str(exc).splitlines()[0]}."
    finally:
        rec.remove()
    value = values[0]
    ratio = update_ratio(before, model, len(values))
    results = [
        CheckResult.compare("loss_positive", value if math.isfinite(value) else float("nan"), 0.0, ">",
                            f"training loss is {value}: a zero or non-finite loss trains nothing "
                            "(the original bug: the prediction dict was not unwrapped, no horizon "
                            "matched, loss=0). Fix: the loss must read output['predictions'] and "
                            "match every configured horizon." + error),
        CheckResult.compare("loss_grad_path", float(rec.any_gradient), 1.0, "==",
                            "the training step put no gradient on any parameter (a detached or constant "
                            "loss, or a batch the step skipped). Fix: compute the loss from the model's "
                            "predictions, never a new tensor." + error),
        CheckResult.compare("update_ratio", ratio, min_update, ">",
                            f"the training step moved the parameters by {ratio:.3g} of their norm per step: "
                            "nothing learns (an optimizer that never steps, a learning rate far too low, "
                            "frozen parameters). Fix: check optimizer.step() is called and train.lr."),
    ]
    for name, part in model_parts(model).items():
        norm = rec.norm(part)
        if name in ("gat", "fusion") and part is None and allow_gat_bypass:
            continue  # the graph path (GAT and its fusion gate) is off on purpose
        results.append(CheckResult.compare(
            f"grad_norm[{name}]", norm, 0.0, ">",
            f"part '{name}' got gradient norm {norm:.3g} in two training steps: "
            + ("it is switched off (None) — the GAT is bypassed. Fix: unset BYPASS_GAT_COMPLETELY / "
               "DISABLE_GRAPH_BUILDER and set model.use_gat / graph.enabled true."
               if part is None else "it does not learn. Fix: check that its output reaches the loss.")))
    model.zero_grad(set_to_none=True)
    return results


@torch.no_grad()
def check_gat_effect(model: torch.nn.Module, batch: DayBatch, horizons: Horizons,
                     min_effect: float = 1e-3) -> CheckResult:
    """Removing the GAT's edges changes the forecasts by more than ``min_effect`` x their spread.

    For atft's model the GAT's own effect (its edges removed, the graph skip's kept) is the figure,
    the graph skip's effect is reported beside it: with the skip on, removing every edge moves the
    forecasts even when the GAT is dead. For another model: every edge removed. The effect is
    the largest over horizons of mean |forecast change| / cross-sectional std of the forecast.
    """
    n_edges = int(batch.edge_index.shape[1])
    full = eval_forward(model, batch)
    ours = "drop_edges" in inspect.signature(model.forward).parameters
    no_gat = (eval_forward_kw(model, batch, drop_edges=("gat",)) if ours
              else eval_forward(model, batch.without_edges()))

    def effect(other: dict[str, Any]) -> float:
        return max(float((full["point"][k] - other["point"][k]).abs().mean())
                   / max(float(full["point"][k].float().std()), 1e-30) for k in horizons.keys)

    gat = effect(no_gat)
    examples = [f"edges={n_edges}"]
    if ours and getattr(model, "graph_skip", None) is not None:
        examples.append(f"graph_skip effect={effect(eval_forward_kw(model, batch, drop_edges=('graph_skip',))):.3g}")
    return CheckResult.compare(
        "gat_edges_change_output", gat if n_edges else float("nan"), min_effect, ">",
        f"removing the GAT's {n_edges} edges moved the forecasts by {gat:.3g} x their spread: the graph path "
        "is bypassed or has no effect. Fix: unset BYPASS_GAT_COMPLETELY / DISABLE_GRAPH_BUILDER; check "
        "graph.enabled, model.use_gat and that the graph builder yields edges (graph.threshold, graph.min_obs).",
        examples=examples)


def eval_forward_kw(model: torch.nn.Module, batch: DayBatch, **kwargs: Any) -> dict[str, Any]:
    """``eval_forward`` with keyword arguments of atft's forward (e.g. ``drop_edges``)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out: dict[str, Any] = model(batch, **kwargs)
            return out
    finally:
        model.train(was)


def check_no_leak(run: Callable[[], Any], tolerance: int = 0) -> CheckResult:
    """Tensors alive after ``run()`` returns minus before (gc-visible): the CPU side of "memory freed"."""
    gc.collect()
    before = live_tensor_count()
    run()
    gc.collect()
    after = live_tensor_count()
    grown = after - before
    return CheckResult.compare(
        "no_tensors_left_alive", float(grown), float(tolerance), "<=",
        f"{grown} tensors created by the run are still referenced after it returned (losses kept "
        "in lists, optimizer held globally...). Fix: accumulate float(loss) not the tensor; drop "
        "references to the optimizer and outputs; call release_cuda_memory().")


def mini_train(model: torch.nn.Module, batches: Sequence[DayBatch], loss_fn: Callable[..., Any],
               steps: int, lr: float, horizons: Horizons, min_std: float,
               step_fn: Callable[..., Any] | None = None,
               scale: Sequence[float] | None = None, min_decrease: float = 0.02) -> list[CheckResult]:
    """A few AdamW steps on a few days: the fixed-batch loss falls MEASURABLY (by ``min_decrease``,
    ``health.min_mini_train_decrease``: a learning rate of 1e-12 leaves the ratio at ~1, a healthy
    run at 0.92-0.93 on the embedded default and a built-from-prices dataset), the prediction
    spread survives, nothing leaks. The relative update size per step is reported beside the ratio.

    ``step_fn(model, batch, loss_fn, optimizer)`` performs one step (default: atft's
    ``train_step``, the function ``train_epoch`` calls); the leak check wraps the whole run, see
    ``check_no_leak``.
    """
    fixed = batches[0]

    def fixed_loss() -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            v = float(loss_fn(model(fixed), fixed).total)
        model.train(was)
        return v

    def default_step(m: torch.nn.Module, b: DayBatch, lf: Callable[..., Any], opt: torch.optim.Optimizer) -> None:
        atft_step(lf)(m, b, opt)  # THE training step

    step = step_fn or default_step
    before = fixed_loss()
    params_before = _snapshot(model)

    def run() -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        model.train()
        for i in range(steps):
            step(model, batches[i % len(batches)], loss_fn, opt)
        model.zero_grad(set_to_none=True)

    leak = check_no_leak(run)
    after = fixed_loss()
    moved = update_ratio(params_before, model, steps)
    del params_before
    results = [
        CheckResult.compare("mini_train_loss_ratio", after / before if before > 0 else float("nan"),
                            1.0 - min_decrease, "<",
                            f"loss on a fixed batch went from {before:.4g} to {after:.4g} in {steps} steps (a fall "
                            f"of less than {min_decrease:.0%}; parameters moved {moved:.3g} of their norm per step): "
                            "the model does not learn. Fix: check lr (too low: the plan's 'gradient almost zero'), "
                            "gradient flow (grad_norm checks) and that targets are not all masked.",
                            examples=[f"before={before:.5g}", f"after={after:.5g}", f"update_ratio={moved:.3g}"]),
        leak,
    ]
    spread, _ = check_head_spread(model, fixed, horizons, min_std, scale)
    for r in spread:
        if r.name.startswith("head_std"):
            r.name = r.name.replace("head_std", "mini_train_head_std")
            results.append(r)
    return results
