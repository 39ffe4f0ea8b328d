"""The DayBatch contract (design.md section 2): one batch = whole days."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

Graph = tuple[Tensor, Tensor]  # (edge_index [2, E] long, edge_attr [E, 3] float32)


def empty_graph() -> Graph:
    """A graph with no edges.

    Shapes:
        -> edge_index ``[2, 0]`` long, edge_attr ``[0, 3]`` float32.
    """
    return torch.zeros((2, 0), dtype=torch.long), torch.zeros((0, 3), dtype=torch.float32)


@dataclass
class DayBatch:
    """One or several whole trading days, each a cross-section of stocks.

    Shapes:
        features: ``[N, T, F]`` float32, normalized, NaN already replaced by 0.
        observed: ``[N, T]`` bool, True where the stock had a row on that window day
            (the validity flag of the NaN -> 0 replacement).
        targets: ``[N, H]`` float32 in the training scale, NaN kept where missing.
        target_mask: ``[N, H]`` bool, ``~isnan(targets)``.
        edge_index: ``[2, E]`` long, indices into this batch's rows; block-diagonal over days
            (never an edge across days).
        edge_attr: ``[E, 3]`` float32: ``[rho, same_sector, same_market]``.
        day_index: ``[N]`` long, which packed day each row belongs to (0..num_days-1).
        codes: ``N`` stock codes; dates: one date per packed day.
        raw_targets: ``[N, H]`` float32 in return units (NaN kept), for metrics.
    """

    features: Tensor
    targets: Tensor
    target_mask: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    day_index: Tensor
    codes: list[str]
    dates: list[dt.date]
    observed: Tensor | None = None
    raw_targets: Tensor | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def num_stocks(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_days(self) -> int:
        return len(self.dates)

    @property
    def date(self) -> dt.date:
        """The date of a single-day batch."""
        if len(self.dates) != 1:
            raise ValueError(f"batch packs {len(self.dates)} days; use .dates")
        return self.dates[0]

    def row_dates(self) -> list[dt.date]:
        """Date of every row (``[N]``)."""
        return [self.dates[i] for i in self.day_index.tolist()]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DayBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            features=mv(self.features),  # type: ignore[arg-type]
            targets=mv(self.targets),  # type: ignore[arg-type]
            target_mask=mv(self.target_mask),  # type: ignore[arg-type]
            edge_index=mv(self.edge_index),  # type: ignore[arg-type]
            edge_attr=mv(self.edge_attr),  # type: ignore[arg-type]
            day_index=mv(self.day_index),  # type: ignore[arg-type]
            observed=mv(self.observed),
            raw_targets=mv(self.raw_targets),
        )

    def as_dict(self) -> dict[str, Tensor]:
        """The dict input convention of a user's model (``--atft-model-input dict``).

        Shapes:
            -> ``{"features": [N, T, F], "edge_index": [2, E], "edge_attr": [E, 3]}``.
        """
        return {"features": self.features, "edge_index": self.edge_index, "edge_attr": self.edge_attr}

    def without_edges(self) -> DayBatch:
        """The same batch with no edges (for the "GAT not bypassed" check)."""
        return replace(
            self,
            edge_index=self.edge_index.new_zeros((2, 0)),
            edge_attr=self.edge_attr.new_zeros((0, self.edge_attr.shape[1] if self.edge_attr.dim() == 2 else 3)),
        )

    def validate_shapes(self, num_features: int | None = None, num_horizons: int | None = None) -> None:
        """Raise ShapeError when the batch's shapes break the contract.

        Reads shapes only (host metadata): no device synchronisation, so the model's forward runs
        it on every call. ``validate`` adds the checks that read values.
        """
        from atft.errors import ShapeError

        f = self.features
        if f.dim() != 3:
            raise ShapeError(f"features must be [N, T, F], got shape {tuple(f.shape)}")
        n, _, nf = f.shape
        if num_features is not None and nf != num_features:
            raise ShapeError(
                f"batch has F={nf} features but the model is configured for F={num_features}. "
                "Fix: set model.num_features / data.features to match the data, or retrain."
            )
        if self.targets.dim() != 2 or self.targets.shape[0] != n:
            raise ShapeError(f"targets must be [N, H] with N={n}, got {tuple(self.targets.shape)}")
        if num_horizons is not None and self.targets.shape[1] != num_horizons:
            raise ShapeError(f"targets have H={self.targets.shape[1]} horizons, config has {num_horizons}")
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2:
            raise ShapeError(f"edge_index must be [2, E], got {tuple(self.edge_index.shape)}")
        e = self.edge_index.shape[1]
        if self.edge_attr.shape[0] != e:
            raise ShapeError(f"edge_attr has {self.edge_attr.shape[0]} rows for E={e} edges")
        if self.day_index.shape != (n,):
            raise ShapeError(f"day_index must be [N]={n}, got {tuple(self.day_index.shape)}")

    def validate(self, num_features: int | None = None, num_horizons: int | None = None) -> None:
        """Raise when the batch breaks the contract: shapes (``validate_shapes``), edge indices in
        range and within one day, finite features and edge features.

        Reads values (each check a host synchronisation on an accelerator): run where batches
        are built (``DayBatchLoader``, on the CPU, once per batch) and by the health suite, not
        in the model's forward.

        Raises:
            ShapeError: a shape, an edge index out of range, or an edge across days.
            DataError: NaN/inf in the features or edge features.
        """
        from atft.errors import DataError, ShapeError

        self.validate_shapes(num_features, num_horizons)
        n, e = self.features.shape[0], self.edge_index.shape[1]
        if e and (int(self.edge_index.min()) < 0 or int(self.edge_index.max()) >= n):
            raise ShapeError(f"edge_index has indices outside [0, {n})")
        if e and bool((self.day_index[self.edge_index[0]] != self.day_index[self.edge_index[1]]).any()):
            raise ShapeError("edge_index connects stocks of different days (graphs must be per day)")
        for name, t in (("features", self.features), ("edge_attr", self.edge_attr)):
            if not bool(torch.isfinite(t).all()):
                raise DataError(f"batch {name} contain NaN/inf ({int((~torch.isfinite(t)).sum())} values). "
                                "Fix: the DayBatch contract replaces missing values by 0 (flagged in "
                                "`observed`) before the model; check the normalizer / loader.")
