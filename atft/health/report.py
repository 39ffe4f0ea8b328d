"""`atft report health_report.json [--out DIR]`: Markdown plus PNG plots of a health run.

Plots: loss curves (train/val per epoch), IC per epoch per horizon (from the slow tests'
training histories) and the distribution of point predictions per horizon (from the head
check). A section whose data the report lacks says so instead of drawing an empty plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atft.errors import InputError
from atft.io import atomic_path, write_text


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def plot_losses(histories: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for h in histories:
        ep = [r["epoch"] + 1 for r in h["epochs"]]
        ax.plot(ep, [r["train/total_loss"] for r in h["epochs"]], "o-", label=f"train ({h['run']})")
        ax.plot(ep, [r["val/total_loss"] for r in h["epochs"]], "s--", label=f"val ({h['run']})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("total loss")
    ax.set_title("Loss curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_ic(histories: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for h in histories:
        ep = [r["epoch"] + 1 for r in h["epochs"]]
        keys = sorted({k for r in h["epochs"] for k in r if k.startswith("val/ic_")},
                      key=lambda k: int(k.split("_")[-1].rstrip("d")))
        for k in keys:
            ax.plot(ep, [r.get(k) if r.get(k) is not None else float("nan") for r in h["epochs"]], "o-",
                    label=f"{k.removeprefix('val/ic_')} ({h['run']})")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("validation IC (mean per-date Pearson)")
    ax.set_title("IC per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_predictions(samples: dict[str, list[float]], source: str, path: Path) -> None:
    plt = _plt()
    keys = list(samples)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        v = [x for x in samples[k] if x == x]
        ax.hist(v, bins=30, color="tab:blue", alpha=0.8)
        sd = (sum((x - sum(v) / len(v)) ** 2 for x in v) / len(v)) ** 0.5 if v else float("nan")
        ax.set_title(f"{k}  std={sd:.3g}", fontsize=9)
        ax.set_xlabel("point forecast (return units)")
        ax.locator_params(axis="x", nbins=4)
    fig.suptitle(f"Distribution of predictions ({source})", fontsize=10, y=1.04)
    _save(fig, path)


def read_report(path: str | Path) -> dict[str, Any]:
    """A health report JSON (``--atft-report``), validated.

    Raises:
        InputError: missing file, invalid JSON, or not an atft health report.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"health report not found: {path}. Fix: run the suite first "
                         "(pytest -m smoke writes health_report.json) or pass its path.")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}). Fix: rerun the suite to rewrite it.") from None
    if not isinstance(report, dict) or "checks" not in report:
        raise InputError(f"{path} is not an atft health report (no 'checks'). Fix: pass the file "
                         "written by --atft-report.")
    return report


def render(report: dict[str, Any], out: Path) -> Path:
    """Write ``out/report.md`` and the PNGs; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    checks = report.get("checks", [])
    arts = report.get("artifacts", [])
    histories = [a for a in arts if a.get("kind") == "history"]
    preds = [a for a in arts if a.get("kind") == "predictions"]
    s = report.get("summary", {})
    lines = [
        "# atft health report", "",
        f"- created: {report.get('created')}", f"- config: `{report.get('config')}`",
        f"- data: `{report.get('data')}`", f"- checkpoint: `{report.get('checkpoint')}`",
        f"- environment: {report.get('environment')}",
        f"- checks: {s.get('checks', len(checks))}, failed: {s.get('failed', 0)}", "",
        "| criterion | figure | threshold | verdict | test |", "|---|---|---|---|---|",
    ]
    for c in checks:
        fig = "n/a" if c.get("figure") is None else f"{c['figure']:.6g}"
        thr = "n/a" if c.get("threshold") is None else f"{c['op']} {c['threshold']:.6g}"
        lines.append(f"| {c['name']} | {fig} | {thr} | **{c['verdict']}** | `{c.get('test', '')}` |")
    failed = [c for c in checks if not c.get("passed")]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- **{c['name']}**: {c.get('message', '')} {c.get('examples', '')}" for c in failed]
    lines += ["", "## Plots", ""]
    if histories:
        plot_losses(histories, out / "loss_curves.png")
        plot_ic(histories, out / "ic_per_epoch.png")
        lines += ["![loss curves](loss_curves.png)", "", "![IC per epoch](ic_per_epoch.png)", ""]
    else:
        lines += ["No training history in this report (run `pytest -m slow` for loss and IC curves).", ""]
    if preds:
        plot_predictions(preds[-1]["values"], preds[-1].get("source", ""), out / "predictions.png")
        lines += ["![distribution of predictions](predictions.png)", ""]
    else:
        lines += ["No prediction sample in this report (the smoke head check records one).", ""]
    md = out / "report.md"
    write_text(md, "\n".join(lines) + "\n")
    return md
