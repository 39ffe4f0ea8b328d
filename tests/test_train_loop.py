"""The training loop ``fit`` on the smoke panel: run files, resume, leaks, early stopping, contracts.

One reference run (2 epochs of 2 steps, shared ``Prepared``) is inspected by most tests; the
resume test kills a second run after epoch 0 and compares the resumed run with the reference.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from atft.config import Config, load
from atft.data.pipeline import Prepared
from atft.errors import ConfigError, HorizonMismatchError, InputError
from atft.eval.inference import ic_bootstrap_ci
from atft.eval.metrics import compute_metrics, per_date_ic
from atft.health.model_checks import check_no_leak
from atft.model.atft_gat_fan import ATFT_GAT_FAN
from atft.train.checkpoint import load_model
from atft.train.fit import FitResult, fit, record_keys
from atft.train.interrupt import RunInterrupted
from atft.train.loss import MultiHorizonLoss
from atft.train.prepare import prepare
from atft.train.step import predict, train_epoch

TIMING_KEYS = {"train/seconds", "train/samples_per_s", "train/batch_seconds"}  # wall-clock, not state
FLOAT = r"(-?\d+\.\d+|nan)"
PLANTED: list[torch.Tensor] = []  # the planted leak of test_planted_leak_is_detected


@dataclass
class Env:
    """Tmp dirs, the reference config and its prepared data."""

    root: Path
    cache: Path
    cfg: Config
    prepared: Prepared

    def config(self, *overrides: str, env: dict[str, str] | None = None) -> Config:
        """The smoke config writing under ``root`` (plus overrides)."""
        return make_config(self.root, self.cache, *overrides, env=env)


def make_config(root: Path, cache: Path, *overrides: str, env: dict[str, str] | None = None) -> Config:
    base = [f"data.cache_dir={cache}", f"train.run_dir={root / 'runs'}", f"train.log_dir={root / 'logs'}",
            "train.progress=false", "train.device=cpu", "train.max_epochs=2",
            "train.max_steps_per_epoch=2", "data.val_fraction=0.1", "data.test_fraction=0.1"]
    return load("smoke", base + list(overrides), env=env if env is not None else {})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("train_loop")
    cfg = make_config(root, root / "cache")
    return Env(root, root / "cache", cfg, prepare(cfg))


@pytest.fixture(scope="module")
def ref(env: Env) -> FitResult:
    """The uninterrupted reference run (2 epochs)."""
    return fit(env.cfg, env.prepared, run_id="ref")


def _log_text(env: Env, run_id: str) -> str:
    return (env.root / "logs" / f"train_{run_id}.log").read_text()


def _same(a: Any, b: Any) -> bool:
    """Equality with NaN == NaN and JSON null == NaN."""
    nan_a = a is None or (isinstance(a, float) and math.isnan(a))
    nan_b = b is None or (isinstance(b, float) and math.isnan(b))
    return (nan_a and nan_b) or a == b


def _recompute(frame: pl.DataFrame, env: Env, key: str) -> tuple[dict[str, float], tuple[float, float]]:
    """Metrics and IC CI of one horizon recomputed from a predictions parquet."""
    h = env.prepared.horizons
    j = h.keys.index(key)
    y = frame[h.targets[j]].fill_null(float("nan")).to_numpy().astype(np.float64)
    p = frame[h.pred_columns[j]].to_numpy().astype(np.float64)
    date_id = frame["Date"].to_physical().to_numpy()
    ms = env.cfg.data.min_stocks
    daily = per_date_ic(p, y, date_id, min_stocks=ms)
    metrics = compute_metrics(p, y, date_id, min_stocks=ms, codes=frame["Code"].to_numpy(),
                              cost=env.cfg.train.cost_bps / 1e4)
    return metrics, ic_bootstrap_ci(daily.values, seed=env.cfg.train.seed)


# ---------------------------------------------------------------- files of a run


def test_log_has_the_grepped_loss_and_per_horizon_lines(env: Env, ref: FitResult) -> None:
    text = _log_text(env, "ref")
    grepped = [ln for ln in text.splitlines() if re.search(r"loss|Loss|yhat_std|SCALE", ln)]
    assert len(ref.history) == 2 and not ref.stopped_early
    for rec in ref.history:
        e = int(rec["epoch"])
        m = [re.search(rf"epoch {e}: train/total_loss: {FLOAT} val/total_loss: {FLOAT} ", ln) for ln in grepped]
        hits = [x for x in m if x]
        assert len(hits) == 1, f"epoch {e}: {len(hits)} loss lines"
        assert hits[0].group(1) == f"{rec['train/total_loss']:.4f}"
        assert hits[0].group(2) == f"{rec['val/total_loss']:.4f}"
        assert math.isfinite(rec["train/total_loss"]) and rec["train/total_loss"] > 0
        for key in env.prepared.horizons.keys:
            s = key.removeprefix("horizon_")
            pat = (rf"epoch {e}: val {key}: yhat_std={FLOAT} SCALE\(yhat/y\)={FLOAT} IC={FLOAT} "
                   rf"RankIC={FLOAT} ICIR={FLOAT} Sharpe={FLOAT} ")
            hits = [x for x in (re.search(pat, ln) for ln in grepped) if x]
            assert len(hits) == 1, f"epoch {e} {key}: {len(hits)} metric lines"
            got = hits[0].groups()
            assert got[0] == f"{rec[f'val/yhat_std_{s}']:.4f}"
            assert got[1] == f"{rec[f'val/scale_{s}']:.4g}"
            assert got[2] == f"{rec[f'val/ic_{s}']:.4f}"
            assert got[3] == f"{rec[f'val/rank_ic_{s}']:.4f}"
            assert got[5] == f"{rec[f'val/sharpe_{s}']:.3f}"
            assert rec[f"val/yhat_std_{s}"] > 0  # the head is not constant


def test_config_yaml_is_the_effective_config(env: Env, ref: FitResult) -> None:
    stored = load(ref.run_dir / "config.yaml", env={})
    assert stored == env.cfg
    assert stored.train.max_steps_per_epoch == 2 and stored.data.cache_dir == str(env.cache)


def test_metrics_jsonl_one_line_per_epoch_equal_to_history(env: Env, ref: FitResult) -> None:
    lines = (ref.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(ref.history) == 2
    for line, rec in zip(lines, ref.history, strict=True):
        got = json.loads(line)
        assert set(got) == set(rec) == set(record_keys(env.prepared.horizons))
        bad = [k for k in rec if not _same(got[k], rec[k])]
        assert not bad, bad
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]


@pytest.mark.parametrize("split", ["val", "test"])
def test_metrics_json_is_recomputable_from_the_predictions_parquet(env: Env, ref: FitResult, split: str) -> None:
    h = env.prepared.horizons
    final = json.loads((ref.run_dir / "metrics.json").read_text())
    assert final["best_epoch"] == ref.best_epoch and final["early_stopping_metric"] == "val/ic_1d"
    frame = pl.read_parquet(ref.run_dir / f"predictions_{split}.parquet")
    assert frame.columns == ["Code", "Date", *h.targets, *h.pred_columns]
    assert frame.schema["Date"] == pl.Date and frame.schema["Code"] == pl.String
    assert frame.height > 0 and frame.equals(frame.sort("Date", "Code"))
    for key in h.keys:
        stored = dict(final[split][key])
        lo_hi = stored.pop("ic_ci95")
        metrics, ci = _recompute(frame, env, key)
        assert set(stored) == set(metrics)
        bad = {k: (stored[k], metrics[k]) for k in metrics if not _same(stored[k], metrics[k])}
        assert not bad, f"{split} {key}: metrics.json differs from the parquet: {bad}"
        assert lo_hi == list(ci) and lo_hi[0] <= metrics["ic"] <= lo_hi[1]
    assert math.isfinite(final[split]["total_loss"])
    assert "oracle" not in final  # fit never reads the synthetic sidecar: atft train adds it (test_train_cli)


def test_predictions_keep_missing_targets_as_null(env: Env, ref: FitResult) -> None:
    """Rows are exactly the valid (stock, date) cells of the split; NaN targets are null, never 0.0."""
    p, h = env.prepared, env.prepared.horizons
    frame = pl.read_parquet(ref.run_dir / "predictions_test.parquet")
    dates = p.loader("test", shuffle=False).dates  # [D_test]
    di, si = np.nonzero(p.panel.valid[dates])  # [M], [M]
    cols: dict[str, Any] = {"Code": np.asarray(p.panel.codes, dtype=object)[si].tolist(),
                            "Date": [p.panel.dates[d] for d in dates[di].tolist()]}
    tg = p.panel.targets[dates[di], si]  # [M, H] return units, NaN = missing
    for j, col in enumerate(h.targets):
        cols[col] = tg[:, j]
    expected = (pl.DataFrame(cols, schema_overrides={"Code": pl.String, "Date": pl.Date})
                .with_columns([pl.col(c).fill_nan(None) for c in h.targets]).sort("Date", "Code"))
    got = frame.select(["Code", "Date", *h.targets])
    assert got.equals(expected)
    n_missing = {c: int(np.isnan(tg[:, j]).sum()) for j, c in enumerate(h.targets)}
    assert n_missing[h.targets[-1]] > 0  # the last 20 days have no 20-day target
    assert {c: frame[c].null_count() for c in h.targets} == n_missing
    final = json.loads((ref.run_dir / "metrics.json").read_text())
    for key, col in zip(h.keys, h.targets, strict=True):  # metrics used only the present targets
        assert final["test"][key]["n_rows"] == frame.height - n_missing[col]
    assert frame.select([pl.col(c).is_null().sum() for c in h.pred_columns]).row(0) == (0,) * len(h)


def test_checkpoints_load_weights_only_and_reproduce_the_test_predictions(env: Env, ref: FitResult) -> None:
    ck = ref.run_dir / "checkpoints"
    best = torch.load(ck / "best.pt", weights_only=True)
    last = torch.load(ck / "last.pt", weights_only=True)
    assert best["epoch"] == ref.best_epoch and last["epoch"] == 1 and len(last["history"]) == 2
    assert {"optimizer", "scheduler", "torch_rng", "state_dict"} <= set(last)
    assert best["state_dict"].keys() == last["state_dict"].keys()
    model = load_model(ck / "best.pt", env.cfg, env.prepared.num_features).model
    frame, _, _ = predict(model, env.prepared.loader("test", shuffle=False), env.prepared.horizons,
                          target_scale=[float(s) for s in np.asarray(env.prepared.normalizer.target_scale)])
    assert frame.equals(pl.read_parquet(ref.run_dir / "predictions_test.parquet"))


SCORE = """
import sys
import polars as pl
from atft.config import load
from atft.horizons import Horizons
from atft.train.checkpoint import load_model
from atft.train.prepare import prepare
from atft.train.step import predict

import numpy as np
from atft.data.loader import DayBatchLoader

ck, data, out, what = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
restored = load_model(ck)
cfg = restored.config
prep = prepare(cfg, data, normalizer=None if what == "refit" else restored.normalizer)
scale = [float(s) for s in prep.normalizer.target_scale]
if what == "test":  # the run's own test loader: same packing of days, bit-identical scores expected
    loader = prep.loader("test", shuffle=False)
else:  # every date after the warm-up, whatever split it falls in
    loader = DayBatchLoader(prep.panel, prep.normalized, np.arange(prep.split.warmup, prep.panel.num_dates),
                            seq_len=cfg.data.sequence_length, batch_size=cfg.train.batch_size,
                            graph_builder=prep.graph_builder, min_stocks=cfg.data.min_stocks)
predict(restored.model, loader, Horizons.from_config(cfg), target_scale=scale)[0].write_parquet(out)
"""


def _score_in_a_new_process(tmp: Path, checkpoint: Path, data: Path, what: str) -> pl.DataFrame:
    """``what``: "test" (the test split), "all" (every date, stored normalizer) or "refit"."""
    import subprocess
    import sys

    out = tmp / f"scored_{data.stem}_{what}.parquet"
    env = {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCORE, str(checkpoint), str(data), str(out), what],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pl.read_parquet(out)


def test_a_checkpoint_scores_like_its_run_after_a_process_restart(env: Env, ref: FitResult,
                                                                   tmp_path: Path) -> None:
    """best.pt restores model, config AND normalizer: a new process scoring the same data gives the
    run's test predictions exactly; on a panel that lacks the first 40 % of the dates (other train
    dates, so a refit normalizer would differ) it still gives them, and a refit does not."""
    from atft.synth.cache import ensure_default_panel

    ck = ref.run_dir / "checkpoints" / "best.pt"
    want = pl.read_parquet(ref.run_dir / "predictions_test.parquet")
    keys, preds = ["Code", "Date"], env.prepared.horizons.pred_columns
    assert want.equals(_score_in_a_new_process(tmp_path, ck, ensure_default_panel(env.cfg), "test"))

    data = pl.read_parquet(ensure_default_panel(env.cfg))
    dates = data["Date"].unique().sort()
    later = tmp_path / "later.parquet"
    data.filter(pl.col("Date") >= dates[int(0.4 * dates.len())]).write_parquet(later)

    def worst(what: str) -> float:  # largest |score - the run's test score| over the run's test rows
        got = _score_in_a_new_process(tmp_path, ck, later, what).join(want.select(keys), on=keys)
        assert got.height == want.height
        got = got.sort("Date", "Code")
        return max(float((got[c] - want[c]).abs().max()) for c in preds)

    spread = min(float(want[c].std()) for c in preds)
    assert worst("all") <= 1e-4 * spread  # other days packed together: float rounding only
    assert worst("refit") > 1e-2 * spread  # the planted fault: a normalizer refit on other train dates


# ---------------------------------------------------------------- resume


def test_resume_after_a_kill_equals_the_uninterrupted_run(env: Env, ref: FitResult) -> None:
    def kill_after_first_epoch(epoch: int, record: dict[str, Any]) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(env.cfg, env.prepared, run_id="cut", callbacks=[kill_after_first_epoch])
    cut = env.root / "runs" / "cut"
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (cut / "metrics.json").exists()

    res = fit(env.cfg, env.prepared, resume=cut)  # (test_train_cli resumes without a Prepared)
    assert res.run_dir == cut and res.best_epoch == ref.best_epoch
    for name in ("best.pt", "last.pt"):
        a = torch.load(ref.run_dir / "checkpoints" / name, weights_only=True)["state_dict"]
        b = torch.load(cut / "checkpoints" / name, weights_only=True)["state_dict"]
        assert a.keys() == b.keys()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{name}: {differ}"
    assert len(res.history) == len(ref.history) == 2
    for ra, rb in zip(ref.history, res.history, strict=True):
        bad = [k for k in ra if k not in TIMING_KEYS and not _same(ra[k], rb[k])]
        assert not bad, bad
    assert [json.loads(x)["epoch"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    fa = json.loads((ref.run_dir / "metrics.json").read_text())
    fb = json.loads((cut / "metrics.json").read_text())
    assert {k: v for k, v in fa.items() if k != "run_id"} == {k: v for k, v in fb.items() if k != "run_id"}
    assert "resumed" in _log_text(env, "cut")


class StopAfter:
    """A stop request that turns True on its ``n``-th question (the first is asked before training)."""

    def __init__(self, n: int) -> None:
        self.n, self.asked, self.requested = n, 0, "SIGINT"

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.n


@pytest.mark.parametrize("n", [2, 3, 5], ids=["mid-epoch-0", "end-of-epoch-0", "mid-epoch-1"])
def test_resume_after_an_interrupt_equals_the_uninterrupted_run(env: Env, ref: FitResult, n: int) -> None:
    run_id = f"stop{n}"
    with pytest.raises(RunInterrupted, match=f"continue with: atft train --resume .*{run_id}") as info:
        fit(env.cfg, env.prepared, run_id=run_id, stop=StopAfter(n))
    assert info.value.saved
    cut = env.root / "runs" / run_id
    assert (cut / "checkpoints" / "last.pt").exists() and not (cut / "metrics.json").exists()
    res = fit(env.cfg, env.prepared, resume=cut)
    for name in ("best.pt", "last.pt"):
        a = torch.load(ref.run_dir / "checkpoints" / name, weights_only=True)["state_dict"]
        b = torch.load(cut / "checkpoints" / name, weights_only=True)["state_dict"]
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{name}: {differ}"
    for ra, rb in zip(ref.history, res.history, strict=True):
        bad = [k for k in ra if k not in TIMING_KEYS and not _same(ra[k], rb[k])]
        assert not bad, bad
    fa = json.loads((ref.run_dir / "metrics.json").read_text())
    fb = json.loads((cut / "metrics.json").read_text())
    assert {k: v for k, v in fa.items() if k != "run_id"} == {k: v for k, v in fb.items() if k != "run_id"}


def test_an_interrupt_before_the_first_step_leaves_no_run_directory(env: Env) -> None:
    with pytest.raises(RunInterrupted, match="nothing was saved") as info:
        fit(env.cfg, env.prepared, run_id="stop1", stop=StopAfter(1))
    assert not info.value.saved and not (env.root / "runs" / "stop1").exists()
    assert "interrupted" in _log_text(env, "stop1")


def test_resume_without_last_checkpoint_is_an_input_error(env: Env, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="last.pt not found.*Fix"):
        fit(env.cfg, env.prepared, resume=tmp_path)


# ---------------------------------------------------------------- leaks


def test_nothing_of_the_run_stays_referenced(env: Env, ref: FitResult) -> None:
    cfg = env.config("train.max_epochs=1", "train.max_steps_per_epoch=1")
    result = check_no_leak(lambda: fit(cfg, env.prepared, run_id="leak"))  # graphs already cached by ref
    assert result.passed, str(result)


def test_planted_leak_is_detected(env: Env, ref: FitResult) -> None:
    cfg = env.config("train.max_epochs=1", "train.max_steps_per_epoch=1")

    def hoard(epoch: int, record: dict[str, Any]) -> None:
        PLANTED.append(torch.tensor([record["train/total_loss"]]))

    try:
        result = check_no_leak(lambda: fit(cfg, env.prepared, run_id="planted", callbacks=[hoard]))
    finally:
        PLANTED.clear()
    assert not result.passed and result.figure == 1.0


# ---------------------------------------------------------------- early stopping


def test_early_stopping_on_a_metric_that_cannot_improve(env: Env) -> None:
    # the number of validation rows is the same every epoch: it never improves after epoch 0
    cfg = env.config("train.max_epochs=5", "train.patience=1", "train.max_steps_per_epoch=1",
                     "train.early_stopping_metric=val/n_rows_1d", "train.early_stopping_mode=max")
    res = fit(cfg, env.prepared, run_id="early")
    assert res.stopped_early and len(res.history) == 2 and res.best_epoch == 0
    assert res.best_metric == res.history[0]["val/n_rows_1d"] > 0
    assert len((res.run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert re.search(r"early stopping at epoch 1: val/n_rows_1d did not improve for 1 epochs "
                     r"\(train.patience=1", _log_text(env, "early"))


def test_unknown_early_stopping_metric_fails_before_training(env: Env) -> None:
    cfg = env.config("train.early_stopping_metric=val/IC_1d")
    with pytest.raises(ConfigError, match=r"'val/IC_1d' is not a logged metric.*'val/ic_1d'.*'val/total_loss'"):
        fit(cfg, env.prepared, run_id="badmetric")
    assert not (env.root / "runs" / "badmetric" / "checkpoints" / "last.pt").exists()


# ---------------------------------------------------------------- horizon contract, NaN targets


class _TopLevelKeys(torch.nn.Module):
    """The original bug: forward returns the horizon dict itself, not {'predictions': ...}."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, batch: Any) -> dict[str, Any]:
        return dict(self.inner(batch)["predictions"])


class _DriftedKeys(_TopLevelKeys):
    """Key-format drift: 'horizon_1' instead of 'horizon_1d'."""

    def forward(self, batch: Any) -> dict[str, Any]:
        out = self.inner(batch)
        return {"predictions": {k.removesuffix("d"): v for k, v in out["predictions"].items()},
                "point": out["point"]}


@pytest.mark.parametrize("wrapper", [_TopLevelKeys, _DriftedKeys])
def test_loss_reads_output_predictions_or_fit_raises(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                     wrapper: type[_TopLevelKeys]) -> None:
    build = ATFT_GAT_FAN.from_config
    monkeypatch.setattr(ATFT_GAT_FAN, "from_config",
                        staticmethod(lambda cfg, f=None: wrapper(build(cfg, f))))
    handlers = list(logging.getLogger("atft").handlers)
    with pytest.raises(HorizonMismatchError, match="predictions"):
        fit(env.cfg, env.prepared, run_id=f"keys_{wrapper.__name__}")
    assert logging.getLogger("atft").handlers == handlers  # log file detached


def test_predict_rejects_an_output_without_point(env: Env) -> None:
    model = _TopLevelKeys(ATFT_GAT_FAN.from_config(env.cfg, env.prepared.num_features))
    with pytest.raises(HorizonMismatchError, match="'point'"):
        predict(model, [env.prepared.day_batch("val")], env.prepared.horizons)


def test_train_epoch_skips_all_missing_batches_and_masks_nan(env: Env) -> None:
    torch.manual_seed(0)
    model = ATFT_GAT_FAN.from_config(env.cfg, env.prepared.num_features)
    loss_fn = MultiHorizonLoss.from_config(env.cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    good = env.prepared.day_batch("train", 0)
    nan = torch.full_like(good.targets, float("nan"))
    empty = replace(good, targets=nan, target_mask=torch.zeros_like(good.target_mask))
    partly = good.targets.clone()
    partly[: good.num_stocks // 2] = float("nan")  # half the rows missing
    half = replace(good, targets=partly, target_mask=~torch.isnan(partly))
    stats = train_epoch(model, [empty, half, empty], loss_fn, opt)
    assert stats.steps == 1 and stats.skipped_batches == 2 and stats.samples == good.num_stocks
    assert math.isfinite(stats.loss) and stats.loss > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- graph path


@pytest.mark.parametrize(("overrides", "flags"), [
    (("model.use_gat=false",), {}),
    (("graph.enabled=false",), {}),
    ((), {"BYPASS_GAT_COMPLETELY": "1"}),
    ((), {"DISABLE_GRAPH_BUILDER": "1"}),
])
def test_graph_off_means_no_edges_in_every_split(env: Env, overrides: tuple[str, ...],
                                                 flags: dict[str, str]) -> None:
    cfg = env.config(*overrides, env=flags)
    p = prepare(cfg)
    assert p.graph_builder is None
    for split in ("train", "val", "test"):
        sizes = {int(b.edge_index.shape[1]) for b in p.loader(split)}
        assert sizes == {0}, split
    model = ATFT_GAT_FAN.from_config(cfg, p.num_features)
    assert model.gat is None and model.fusion is None


def test_graph_on_means_edges_in_train_and_val(env: Env) -> None:
    assert env.prepared.graph_builder is not None
    for split in ("train", "val"):
        batches = list(env.prepared.loader(split, shuffle=False))
        assert batches and all(int(b.edge_index.shape[1]) > 0 for b in batches), split
        b = batches[0]
        assert int(b.edge_index.max()) < b.num_stocks
        assert bool((b.day_index[b.edge_index[0]] == b.day_index[b.edge_index[1]]).all())
