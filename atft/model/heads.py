"""Per-horizon quantile heads with ordered quantiles; the point forecast is the median.

For quantile levels ``q_0 < ... < q_m = 0.5 < ... < q_{Q-1}`` a head maps ``z [N, H]`` to raw
outputs ``u [N, Q]`` and builds::

    median       = u_m
    upper_j      = median + sum_{i=m+1..j} softplus(u_i)        j > m
    lower_j      = median - sum_{i=j..m-1} softplus(u_i)        j < m

so the quantiles are ordered by construction (strictly, up to float rounding). Init: the last
layer's weights are N(0, init_std^2) so the first forecasts have a small, non-zero
cross-sectional spread (a constant first prediction is failure mode 1's symptom), and the offset
biases start at the gaps of a standard normal's quantiles (targets are unit-scaled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atft.config import validate_quantiles


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class QuantileHead(nn.Module):
    """MLP ``H -> H -> Q`` with monotone quantile assembly.

    Shapes:
        z: ``[N, H]`` -> quantiles ``[N, Q]`` (ordered along Q).
    """

    def __init__(self, hidden_size: int, quantiles: Sequence[float], *, init_std: float = 0.05,
                 dropout: float = 0.0) -> None:
        super().__init__()
        qs = validate_quantiles(quantiles)  # a ConfigError, which is a ValueError
        self.quantiles, self.median_index, self.init_std = qs, qs.index(0.5), init_std
        self.hidden = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, len(qs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.hidden.reset_parameters()
        nn.init.normal_(self.out.weight, std=self.init_std)
        z = [NormalDist().inv_cdf(q) for q in self.quantiles]
        m = self.median_index
        gaps = [0.0] * len(z)  # bias of u_i: softplus(bias) = gap to the neighbour nearer the median
        for i in range(len(z)):
            if i != m:
                gaps[i] = _inverse_softplus(abs(z[i] - z[i + 1 if i < m else i - 1]))
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor(gaps))

    def forward(self, z: Tensor) -> Tensor:
        u = self.out(self.dropout(F.elu(self.hidden(z))))  # [N, Q]
        m = self.median_index
        median = u[:, m : m + 1]  # [N, 1]
        up = median + F.softplus(u[:, m + 1 :]).cumsum(dim=1)  # [N, Q-m-1]
        down = median - F.softplus(u[:, :m]).flip(1).cumsum(dim=1).flip(1)  # [N, m]
        return torch.cat([down, median, up], dim=1)  # [N, Q]


class MultiHorizonHeads(nn.Module):
    """One ``QuantileHead`` per output key (``horizon_{h}d``).

    Shapes:
        z: ``[N, H]`` -> ``{key: [N, Q]}`` quantiles and ``{key: [N]}`` point (median).
    """

    def __init__(self, hidden_size: int, keys: Sequence[str], quantiles: Sequence[float],
                 *, init_std: float = 0.05, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({k: QuantileHead(hidden_size, quantiles, init_std=init_std, dropout=dropout) for k in keys})
        self.reset_parameters()

    @property
    def median_index(self) -> int:
        return next(iter(self.heads.values())).median_index  # type: ignore[return-value]

    def reset_parameters(self) -> None:
        for head in self.heads.values():
            head.reset_parameters()  # type: ignore[operator]

    def forward(self, z: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        preds = {k: head(z) for k, head in self.heads.items()}  # {key: [N, Q]}
        m = self.median_index
        return preds, {k: p[:, m] for k, p in preds.items()}  # {key: [N]}
