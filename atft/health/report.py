"""``atft report REPORT.json | runs/<id> [--out DIR]``: Markdown plus PNG plots.

Of a health report (``--atft-report``): the table of checks, the slow gates' loss and IC curves,
one validation day's forecast distribution. Of a training run directory: its loss and IC curves
with the test IC and (on a synthetic panel) the oracle, and the live guards' series. The plots
are ``atft.health.plots``; a section whose data is missing says so instead of an empty plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atft.errors import InputError
from atft.health.plots import plot_guards, plot_ic, plot_losses, plot_predictions
from atft.io import write_text


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
        plot_ic(histories, out / "ic_per_epoch.png", report.get("oracle"))
        lines += ["![loss curves](loss_curves.png)", "", "![IC per epoch](ic_per_epoch.png)", ""]
    else:
        lines += ["No training history in this report (run `atft health slow` for loss and IC curves).", ""]
    if preds:
        p = preds[-1]
        plot_predictions(p["values"], p.get("source", ""), p.get("threshold"), out / "predictions.png")
        lines += ["![distribution of predictions](predictions.png)", ""]
    else:
        lines += ["No prediction sample in this report (the smoke head check records one).", ""]
    return _write_markdown(out, lines)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A training run directory's history (metrics.jsonl), final metrics and guard series.

    Raises:
        InputError: not a run directory written by ``atft train``.
    """
    run = Path(run_dir)
    hist = run / "metrics.jsonl"
    if not run.is_dir() or not (hist.exists() or (run / "health.json").exists()):
        raise InputError(f"{run} is not a training run directory (no metrics.jsonl or health.json). Fix: pass "
                         "runs/<run id> as printed by atft train, or a health report JSON.")
    epochs = [json.loads(line) for line in hist.read_text().splitlines() if line.strip()] if hist.exists() else []
    final = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    health = json.loads((run / "health.json").read_text()) if (run / "health.json").exists() else {}
    return {"run": run.name, "epochs": epochs, "final": final, "health": health}


def render_run(run_dir: str | Path, out: Path) -> Path:
    """``out/report.md`` and the PNGs of a training run (module docstring); returns the Markdown path."""
    r = read_run(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    final, health = r["final"], r["health"]
    oracle = (final.get("oracle") or {}).get("test_rows_oracle_ic")
    fired = [(n, e["step"], e["fired"]) for n, g in health.get("guards", {}).items()
             for e in g.get("series", []) if "fired" in e]
    lines = [f"# atft run {r['run']}", "", f"- data: `{final.get('data', 'unknown (the run did not finish)')}`",
             f"- epochs: {len(r['epochs'])}, best epoch: {final.get('best_epoch', '-')} "
             f"({final.get('early_stopping_metric', '-')} = {final.get('best_metric', '-')})",
             "- guards: " + ("none fired" if not fired else "; ".join(f"{n} {a} at step {s}" for n, s, a in fired)), ""]
    if final.get("test"):
        lines += ["| horizon | test IC | 95 % CI | RankIC | Sharpe | yhat_std | oracle (same rows) |", "|---|---|---|---|---|---|---|"]
        for key, m in final["test"].items():
            if isinstance(m, dict) and "ic" in m:
                lo, hi = m.get("ic_ci95", [None, None])
                o = (oracle or {}).get(key)
                lines.append(f"| {key} | {m['ic']:.4f} | [{lo:.4f}, {hi:.4f}] | {m['rank_ic']:.4f} | {m['sharpe']:.3f} | "
                             f"{m['yhat_std']:.5f} | {'-' if o is None else f'{o:.4f}'} |")
        lines.append("")
    if r["epochs"]:
        hist = {"run": r["run"], "epochs": r["epochs"], "best_epoch": final.get("best_epoch"),
                "test": final.get("test", {})}
        plot_losses([hist], out / "loss_curves.png")
        plot_ic([hist], out / "ic_per_epoch.png", oracle)
        lines += ["![loss curves](loss_curves.png)", "", "![IC per epoch](ic_per_epoch.png)", ""]
    if health:
        plot_guards(health, out / "guards.png")
        lines += ["![live guards](guards.png)", ""]
    else:
        lines += ["No guard series (health.guard_every was 0).", ""]
    return _write_markdown(out, lines)


def _write_markdown(out: Path, lines: list[str]) -> Path:
    """``out/report.md`` from its lines, written last (after the plots it links)."""
    md = out / "report.md"
    write_text(md, "\n".join(lines) + "\n")
    return md
