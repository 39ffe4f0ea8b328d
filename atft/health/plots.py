"""The plots of ``atft report``: each answers one question a quant asks of a run.

* Is IC rising, and how sure are we? ``plot_ic``: validation IC per epoch per horizon (one colour
  per horizon everywhere, one line style per run), a +-1.96 s.e. band (i.i.d. days: daily IC is
  autocorrelated, so the band is too narrow, said on the plot), the test IC of the kept epoch with
  its block-bootstrap 95 % CI, and the oracle's IC on the same test rows on a synthetic panel.
* Does the loss go down on both splits? ``plot_losses``.
* Is the forecast spread alive? ``plot_predictions``: one validation day's point forecasts per
  horizon, the day named, with the ``health.min_head_std`` band drawn around their mean.
* Did a guard fire? ``plot_guards``: every live guard's signal over training steps, its
  threshold, and the steps where it fired.

Epochs are numbered as in the logs and ``metrics.jsonl`` (from 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from atft.io import atomic_path

STYLES = ["-", "--", ":", "-."]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def horizon_colors(keys: list[str]) -> dict[str, Any]:
    """One colour per horizon key (``1d``, ``5d``, ... in horizon order), the same in every plot."""
    cmap = _plt().get_cmap("tab10")
    ordered = sorted(set(keys), key=lambda k: int("".join(ch for ch in k if ch.isdigit()) or 0))
    return {k: cmap(i % 10) for i, k in enumerate(ordered)}


def _suffixes(epochs: list[dict[str, Any]], prefix: str) -> list[str]:
    return sorted({k.removeprefix(prefix) for r in epochs for k in r if k.startswith(prefix)},
                  key=lambda s: int(s.rstrip("d")))


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def plot_losses(histories: list[dict[str, Any]], path: Path) -> None:
    """Train and validation loss per epoch, one line style per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, h in enumerate(histories):
        ep = [r["epoch"] for r in h["epochs"]]
        ls = STYLES[i % len(STYLES)]
        ax.plot(ep, [_num(r["train/total_loss"]) for r in h["epochs"]], ls, marker="o", color="tab:blue",
                label=f"train ({h['run']})")
        ax.plot(ep, [_num(r["val/total_loss"]) for r in h["epochs"]], ls, marker="s", color="tab:orange",
                label=f"validation ({h['run']})")
    ax.set_xlabel("epoch (as in the logs)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("total loss (pinball + 1 - Pearson)")
    ax.set_title("Does the loss go down on both splits?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_ic(histories: list[dict[str, Any]], path: Path, oracle: dict[str, float] | None = None) -> None:
    """Validation IC per epoch with a +-1.96 s.e. band, the test IC with its CI, the oracle (module doc)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    suffixes = sorted({s for h in histories for s in _suffixes(h["epochs"], "val/ic_")}, key=lambda s: int(s[:-1]))
    colors = horizon_colors(suffixes)
    last_epoch = 0
    for i, h in enumerate(histories):
        ep = [r["epoch"] for r in h["epochs"]]
        last_epoch = max([last_epoch, *ep])
        for s in suffixes:
            ic = [_num(r.get(f"val/ic_{s}")) for r in h["epochs"]]
            icir = [_num(r.get(f"val/icir_{s}")) for r in h["epochs"]]
            n = [_num(r.get(f"val/n_dates_ic_{s}")) for r in h["epochs"]]
            se = [abs(a / b) / math.sqrt(c) if b and c and math.isfinite(a / b) else float("nan")
                  for a, b, c in zip(ic, icir, n, strict=True)]
            c = colors[s]
            ax.plot(ep, ic, STYLES[i % len(STYLES)], marker="o", ms=3, color=c, label=f"val IC {s} ({h['run']})")
            ax.fill_between(ep, [a - 1.96 * e for a, e in zip(ic, se, strict=True)],
                            [a + 1.96 * e for a, e in zip(ic, se, strict=True)], color=c, alpha=0.12, lw=0)
            test = h.get("test", {}).get(f"horizon_{s}")
            best = h.get("best_epoch", ep[-1] if ep else 0)
            if test and test.get("ic") is not None:
                lo, hi = test.get("ic_ci95", [None, None])
                err = [[test["ic"] - lo], [hi - test["ic"]]] if lo is not None and hi is not None else None
                ax.errorbar([best + 0.15], [test["ic"]], yerr=err, fmt="D", color=c, ms=5, capsize=3,
                            label=f"test IC {s} (epoch {best}, bootstrap 95 % CI)" if i == 0 else None)
    for s in suffixes:
        o = (oracle or {}).get(f"horizon_{s}")
        if o is not None:
            ax.axhline(o, color=colors[s], ls=(0, (1, 3)), lw=1.2, label=f"oracle IC {s} (same test rows)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("epoch (as in the logs)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.3, last_epoch + 0.5)
    ax.set_ylabel("IC (mean per-date Pearson)")
    ax.set_title("Is IC rising, and how sure are we? (band: +-1.96 s.e., i.i.d. days: too narrow)", fontsize=9)
    ax.grid(alpha=0.3)
    # outside the axes: inside, it covered the oracle lines and the test points
    ax.legend(fontsize=6.5, ncol=2, loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    _save(fig, path)


def plot_predictions(samples: dict[str, list[float]], source: str, threshold: float | None, path: Path) -> None:
    """Histograms of one day's point forecasts per horizon, the min_head_std band around the mean."""
    plt = _plt()
    keys = list(samples)
    colors = horizon_colors([k.removeprefix("horizon_") for k in keys])
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        v = [x for x in samples[k] if x == x]
        mean = sum(v) / len(v) if v else float("nan")
        sd = (sum((x - mean) ** 2 for x in v) / len(v)) ** 0.5 if v else float("nan")
        ax.hist(v, bins=30, color=colors[k.removeprefix("horizon_")], alpha=0.85)
        if threshold is not None and v:
            for x in (mean - threshold, mean + threshold):
                ax.axvline(x, color="crimson", ls="--", lw=1)
        ax.set_title(f"{k}: std {sd:.3g}" + ("" if threshold is None else f" (floor {threshold:g})"), fontsize=9)
        ax.set_xlabel("point forecast (return units)")
        ax.set_ylabel("stocks")
        ax.locator_params(axis="x", nbins=4)
    fig.suptitle(f"Is the forecast spread alive? {source}; dashed: mean +- health.min_head_std", fontsize=9, y=1.05)
    _save(fig, path)


GUARD_PANELS = [("loss", "loss", False), ("yhat_std", "yhat_std (return units)", True),
                ("grad_norm", "gradient norm per part", True), ("update_ratio", "||dtheta|| / ||theta||", True),
                ("skipped", "share of batches skipped", False), ("graph", "GAT effect / forecast spread", True)]


def plot_guards(health: dict[str, Any], path: Path) -> None:
    """Every guard's signal over training steps, its threshold (dashed) and the steps it fired (x)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    guards = health.get("guards", {})
    last = int(health.get("last_step") or max([e["step"] for g in guards.values() for e in g.get("series", [])],
                                               default=1))
    for ax, (name, label, log) in zip(axes.ravel(), GUARD_PANELS, strict=True):
        g = guards.get(name, {})
        series = [e for e in g.get("series", []) if "fired" not in e]
        keys = sorted({k for e in series for k in e if k not in ("step", "over")})
        # one colour per horizon in every panel (the IC and histogram plots use the same map)
        hz = [k.removeprefix("horizon_") for k in keys if k.startswith("horizon_")]
        colors = horizon_colors(hz)
        for j, k in enumerate(keys):
            pts = [(e["step"], e[k]) for e in series if k in e and e[k] is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ys = [max(y, 1e-12) for y in ys] if log else list(ys)
                ax.plot(xs, ys, lw=1, marker="o", ms=2, color=colors.get(k.removeprefix("horizon_"), f"C{j % 10}"),
                        label=k)
        if g:
            thr = g.get("threshold")
            if thr is not None and (thr > 0 or not log):
                ax.axhline(thr, color="crimson", ls="--", lw=1, label=f"threshold {thr:g} ({g.get('action')})")
            for e in g.get("series", []):
                if "fired" in e:
                    ax.axvline(e["step"], color="crimson", lw=1.5, alpha=0.6)
                    ax.plot([e["step"]], [ax.get_ylim()[1]], "x", color="crimson", ms=8)
        if log:
            ax.set_yscale("log")
        fired = any("fired" in e for e in g.get("series", []))
        ax.set_title(f"{name}: {'FIRED' if fired else 'quiet'}", fontsize=9, color="crimson" if fired else "black")
        ax.set_xlabel("training step")
        ax.set_xlim(-0.02 * max(last, 1), 1.02 * max(last, 1))  # the run's steps, even for a sparse series
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"Did a guard fire? live guards every {health.get('guard_every')} steps "
                 f"(graph every {health.get('guard_graph_every')})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
