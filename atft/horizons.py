"""THE horizon contract (design.md section 3). Nothing else formats or parses these names.

From the configured horizons (default ``[1, 5, 10, 20]``) this module derives:

* the dataset target column for h from a template (default ``feat_ret_{h}d``; the recovery
  plan's ``horizon_{h}`` is the same thing under another template),
* the model output key ``horizon_{h}d`` used by loss, metrics, logs and the report,
* the prediction column ``pred_horizon_{h}d`` of the prediction parquet files,
* the metric suffix ``{h}d`` of logged metrics (``val/ic_1d``, ``train/loss_5d``),
* the synthetic truth columns ``mu_horizon_{h}d`` / ``mu_own_horizon_{h}d``.

A configured horizon without its target column, or a prediction without its target, is an
error naming the symmetric difference, never a skipped term or a zero loss.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from atft.errors import DataError, HorizonMismatchError

DEFAULT_TEMPLATE = "feat_ret_{h}d"
_KEY_RE = re.compile(r"^horizon_(\d+)d$")


def output_key(h: int) -> str:
    """Model output key for horizon h: ``horizon_{h}d``."""
    return f"horizon_{int(h)}d"


def parse_output_key(key: str) -> int:
    """Inverse of ``output_key``; raises on any other spelling (``horizon_1``, ``point_horizon_1``)."""
    m = _KEY_RE.match(key)
    if not m:
        raise HorizonMismatchError(
            f"'{key}' is not a horizon output key; expected 'horizon_{{h}}d' (e.g. 'horizon_1d')."
        )
    return int(m.group(1))


def pred_column(h: int) -> str:
    """Prediction column in ``predictions_*.parquet``: ``pred_horizon_{h}d``."""
    return f"pred_{output_key(h)}"


def metric_suffix(key: str) -> str:
    """``horizon_1d`` -> ``1d``: the suffix of logged per-horizon metrics (``val/ic_1d``)."""
    return f"{parse_output_key(key)}d"


def metric_name(prefix: str, name: str, key: str) -> str:
    """``metric_name("val", "ic", "horizon_1d")`` -> ``val/ic_1d``."""
    return f"{prefix}/{name}_{metric_suffix(key)}"


def truth_column(h: int, own_only: bool = False) -> str:
    """Synthetic truth column of horizon h: ``mu_horizon_{h}d`` (``mu_own_horizon_{h}d``: the
    own-features-only mean, without the graph part)."""
    return f"mu_{'own_' if own_only else ''}{output_key(h)}"


def target_column(h: int, template: str = DEFAULT_TEMPLATE) -> str:
    """Dataset target column for horizon h under ``template``."""
    return template.format(h=int(h))


def _template_regex(template: str) -> re.Pattern[str]:
    pre, post = template.split("{h}", 1)
    return re.compile("^" + re.escape(pre) + r"(\d+)" + re.escape(post) + "$")


def looks_like_target(column: str) -> bool:
    """Heuristic for error messages and the leakage guard: forward-return-like names."""
    c = column.lower()
    return bool(
        re.search(r"(^|_)(feat_ret|ret|return|target|horizon|fwd|forward|label)_?\d+d?($|_)", c)
        or c.startswith(("target", "label", "fwd_", "forward_", "horizon_"))
    )


@dataclass(frozen=True)
class Horizons:
    """The configured horizons and the names derived from them."""

    horizons: tuple[int, ...]
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if not self.horizons or len(set(self.horizons)) != len(self.horizons):
            raise HorizonMismatchError(f"horizons must be distinct and non-empty, got {self.horizons}")
        if "{h}" not in self.template:
            raise HorizonMismatchError(f"target template '{self.template}' has no '{{h}}'")

    @classmethod
    def from_config(cls, cfg: object) -> Horizons:
        data = cfg.data  # type: ignore[attr-defined]
        return cls(tuple(int(h) for h in data.horizons), str(data.target_template))

    def __len__(self) -> int:
        return len(self.horizons)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.horizons)

    @property
    def max(self) -> int:
        return max(self.horizons)

    @property
    def keys(self) -> list[str]:
        """Model output keys in configured order."""
        return [output_key(h) for h in self.horizons]

    @property
    def targets(self) -> list[str]:
        """Dataset target columns in configured order."""
        return [target_column(h, self.template) for h in self.horizons]

    @property
    def pred_columns(self) -> list[str]:
        return [pred_column(h) for h in self.horizons]

    def truth_columns(self, own_only: bool = False) -> list[str]:
        """Synthetic truth columns in configured order (``truth_column``)."""
        return [truth_column(h, own_only) for h in self.horizons]

    def target_of(self, key: str) -> str:
        return target_column(parse_output_key(key), self.template)

    def index(self, h: int) -> int:
        return self.horizons.index(h)

    def target_horizons_in(self, columns: Iterable[str]) -> list[int]:
        """Horizons present in ``columns`` under this template (for error messages)."""
        rx = _template_regex(self.template)
        return sorted(int(m.group(1)) for c in columns if (m := rx.match(c)))

    def check_targets(self, columns: Sequence[str]) -> None:
        """Every configured target column exists, else a DataError naming missing and look-alikes."""
        cols = set(columns)
        missing = [t for t in self.targets if t not in cols]
        if missing:
            alike = sorted(c for c in columns if looks_like_target(c))
            raise DataError(
                f"target columns missing from the data: {missing} (template '{self.template}', "
                f"horizons {list(self.horizons)}). Columns that look like targets: {alike or 'none'}. "
                "Fix: set data.target_template to the data's naming (e.g. 'horizon_{h}') or "
                "data.horizons to the horizons the data has."
            )

    def check_keys(self, keys: Iterable[str], what: str = "predictions") -> None:
        """``keys`` == the configured output keys, else an error naming the symmetric difference."""
        got = set(keys)
        want = set(self.keys)
        if got != want:
            raise HorizonMismatchError(
                f"{what} keys do not match the configured horizons: missing {sorted(want - got)}, "
                f"unexpected {sorted(got - want)} (symmetric difference {sorted(got ^ want)}). "
                "Expected keys 'horizon_{h}d' for h in data.horizons. "
                "'No matching horizons found' is never skipped silently."
            )

    def check_mapping(self, mapping: Mapping[str, object], what: str = "predictions") -> None:
        self.check_keys(mapping.keys(), what)
