"""Are the targets really the forward returns? Three label statistics (design.md failure modes 5, 12).

* **Values in the legitimate tail** (mode 5, NaN turned into 0.0): the last h rows of each stock
  cannot have an h-day forward return; any value there (an exact 0 or another) is counted.
* **Excess exact zeros**: the share of exact-zero h-day targets against the share of exact-zero
  1-day returns (a NaN filled with 0 inside the panel shows here, not in the tail).
* **Compounding** (mode 12, a label that is not the forward return: a backward-return fallback, a
  shift): where the h rows t..t+h-1 of a stock are consecutive panel dates, compounding the 1-day
  target over them must reproduce the h-day target, ``|prod(1 + r1) - 1 - r_h| <= tolerance``;
  the share of rows that disagree is reported per horizon (rows with a gap are skipped).

One lazy polars query over (Code, Date, targets), streamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from atft.config import Config
from atft.data.schema import legit_tail, missing
from atft.horizons import Horizons

N_EXAMPLES = 5


@dataclass
class LabelStats:
    """Per target column (horizon order): what ``label_stats`` measured.

    Attributes:
        tail_values: non-missing values in each stock's last h rows; tail_rows: rows there.
        zeros / present: exact-zero and non-missing values; zero share = zeros / present.
        compared / disagree: rows where compounding could be checked / where it disagreed
            (no entry for the 1-day target itself, nor without a 1-day target).
        examples: per target, a few offending (Code, Date, value) rows.
    """

    targets: list[str]
    one_day: str | None
    tail_values: dict[str, int] = field(default_factory=dict)
    tail_rows: dict[str, int] = field(default_factory=dict)
    zeros: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    compared: dict[str, int] = field(default_factory=dict)
    disagree: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)

    def zero_share(self, target: str) -> float:
        return self.zeros[target] / self.present[target] if self.present.get(target) else float("nan")


def label_stats(lf: pl.LazyFrame, cfg: Config) -> LabelStats:
    """The three label statistics of the module docstring, for the configured targets present.

    Args:
        lf: the dataset (ids and targets at least); cfg: ``data.*`` and ``health.label_tolerance``.
    """
    schema = lf.collect_schema()
    d, hz = cfg.data, Horizons.from_config(cfg)
    pairs = [(h, t) for h, t in zip(hz.horizons, hz.targets, strict=True) if t in schema]
    one = next((t for h, t in pairs if h == 1), None)
    out = LabelStats([t for _, t in pairs], one)
    if not pairs:
        return out
    code, date, tol = d.code_col, d.date_col, float(cfg.health.label_tolerance)
    base = (lf.select(code, date, *[pl.col(t).cast(pl.Float64).fill_nan(None).alias(t) for _, t in pairs])
            .sort(code, date)
            .with_columns(pl.col(date).rank("dense").cast(pl.Int64).alias("_day")))
    cols: list[pl.Expr] = []
    checks: dict[str, pl.Expr] = {}
    for h, t in pairs:
        tail = legit_tail(h, code, date)
        present = ~missing(t, pl.Float64)
        checks[f"tail:{t}"] = tail & present
        cols += [(tail & present).sum().alias(f"tail:{t}"), tail.sum().alias(f"tailrows:{t}"),
                 (pl.col(t) == 0.0).sum().alias(f"zero:{t}"), present.sum().alias(f"present:{t}")]
        if one is not None and h > 1:
            lr = pl.col(one).log1p()
            fwd = lr.rolling_sum(window_size=h).shift(-(h - 1)).over(code)  # sum of log(1 + r1) over t..t+h-1
            contiguous = (pl.col("_day").shift(-(h - 1)).over(code) - pl.col("_day")) == h - 1
            comp = fwd.exp() - 1.0
            ok = contiguous & comp.is_not_null() & present
            bad = ok & ((comp - pl.col(t)).abs() > tol)
            checks[f"compound:{t}"] = bad
            cols += [ok.sum().alias(f"compared:{t}"), bad.sum().alias(f"disagree:{t}")]
    flags = base.with_columns([e.fill_null(False).alias(f"_f:{k}") for k, e in checks.items()])
    row = flags.select(cols).collect(engine="streaming").row(0, named=True)
    for _, t in pairs:
        out.tail_values[t], out.tail_rows[t] = int(row[f"tail:{t}"]), int(row[f"tailrows:{t}"])
        out.zeros[t], out.present[t] = int(row[f"zero:{t}"]), int(row[f"present:{t}"])
        if f"compared:{t}" in row:
            out.compared[t], out.disagree[t] = int(row[f"compared:{t}"]), int(row[f"disagree:{t}"])
    wanted = [k for k in checks if (k.startswith("tail:") and out.tail_values[k[5:]])
              or (k.startswith("compound:") and out.disagree.get(k[9:], 0))]
    for k in wanted:
        t = k.split(":", 1)[1]
        ex = (flags.filter(pl.col(f"_f:{k}")).select(code, date, t).head(N_EXAMPLES)
              .collect(engine="streaming").rows())
        out.examples.setdefault(t, []).extend(ex)
    return out
