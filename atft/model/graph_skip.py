"""Linear graph skip: a linear peer effect of the neighbours' last-day inputs, added to every quantile.

The graph counterpart of the model's linear skip (``model.linear_skip``), i.e. the "wide" part of
a wide-and-deep graph path, in the spirit of Simplified Graph Convolution (Wu et al. 2019: one
propagation step, then a linear map)::

    w_ij = sigmoid(a . e_ij + b)                      edge gate from e_ij = [rho, same_sector, same_market]
    m_i  = sum_j w_ij x_j / sum_j w_ij                gated mean over i's in-neighbours j (i itself excluded)
    d_i  = m_i . v                                    one peer direction v, learnt on the anchor horizon
    s_i[anchor] = d_i + c_anchor
    s_i[h]      = sg(d_i) l_h + c_h                   other horizons: the same direction, own loading l_h

(``sg`` = stop-gradient; the anchor is the shortest horizon; ``l`` starts at 1, ``v`` and ``c`` at
0, so the skip starts switched off.)

Why one direction learnt on the shortest horizon: a peer effect that persists (industry lead-lag,
Cohen and Frazzini 2008; the AR(1) peer feature of the synthetic panel) moves every horizon in
the same direction, and the 1-day target estimates that direction with by far the least noise.
A separate ``F -> 1`` map per horizon fitted each long horizon to sector-level noise: on the
embedded default, test IC@20d fell to 0.47 x oracle (0.60 with the graph bypassed); letting all
horizons train one shared direction cost the 1-day gain instead (bench/RESULTS.md section 6).
With the direction anchored: IC@1d as with per-horizon maps (0.896 vs 0.898 x oracle on seed 0),
IC@20d 0.68-0.78 x oracle over three training seeds (above the ridge's 0.64). The edge gate (trained through the anchor too) lets the model weight neighbours
by their edge features (e.g. prefer same-sector edges of a correlation graph). The module reads
the same per-day graph as the GAT (block-diagonal over packed days, so no mixing across days)
and is off whenever the graph path is off (``model.use_gat=false`` / ``graph.enabled=false``).
A stock without neighbours gets ``m_i = 0`` (only the biases ``c``).

With ``sector_mean`` (``model.graph_skip_sector_mean``) the direction also reads the plain mean
over the same-sector in-edges, with a direction of its own::

    m_i^s = mean of x_j over i's in-neighbours j with same_sector_ij = 1     (0 if none)
    d_i   = m_i . v + m_i^s . u

the industry-relative input a quant's linear model has next to the correlation neighbours (the
ridge "own + nbr" of ``bench/bench_quality.py`` reads the correlation mean and the same-sector
mean as two blocks). The gated mean alone has to mix both through one direction. A panel without
sector codes has no same-sector edges, so ``m^s = 0`` and only ``v`` acts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

SAME_SECTOR = 1  # column of the same-sector flag in edge_attr [rho, same_sector, same_market]


def _weighted_mean(x: Tensor, edge_index: Tensor, w: Tensor) -> Tensor:
    """``sum_j w_ij x_j / sum_j w_ij`` over in-edges, self-loops weighing 0.

    Shapes: x ``[N, F]``, edge_index ``[2, E]``, w ``[E, 1]`` -> ``[N, F]`` (zeros where the weights sum to 0).
    """
    n = x.shape[0]
    src, dst = edge_index[0], edge_index[1]
    w = w * (src != dst).unsqueeze(-1)  # [E, 1]
    total = scatter(w * x[src], dst, dim=0, dim_size=n, reduce="sum")  # [N, F]
    weight = scatter(w, dst, dim=0, dim_size=n, reduce="sum")  # [N, 1]
    return total / weight.clamp_min(1e-6)  # [N, F]


class NeighbourLinearSkip(nn.Module):
    """Edge-gated neighbour mean of the inputs, one learnt direction, a loading per output.

    Args:
        num_features: F, input features per stock.
        out_features: K, one output per horizon.
        anchor: index of the output that trains the direction (the shortest horizon).
        edge_dim: width of the edge features.
        sector_mean: also map the plain same-sector neighbour mean by a direction of its own
            (``sector_direction``, None when off).

    Shapes:
        x: ``[N, F]``; edge_index: ``[2, E]`` long (row 0 source j, row 1 target i);
        edge_attr: ``[E, edge_dim]`` -> ``[N, K]``.
    """

    def __init__(self, num_features: int, out_features: int, *, anchor: int = 0, edge_dim: int = 3,
                 sector_mean: bool = False) -> None:
        super().__init__()
        if not 0 <= anchor < out_features:
            raise ValueError(f"anchor must index one of the {out_features} outputs, got {anchor}")
        self.anchor = anchor
        self.gate = nn.Linear(edge_dim, 1)
        self.direction = nn.Linear(num_features, 1, bias=False)  # v
        self.sector_direction = nn.Linear(num_features, 1, bias=False) if sector_mean else None  # u
        self.loading = nn.Parameter(torch.empty(out_features))  # l; l[anchor] is not used (1)
        self.bias = nn.Parameter(torch.empty(out_features))  # c
        self.register_buffer("is_anchor", torch.arange(out_features) == anchor, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero direction and biases (the skip starts switched off), unit loadings, uniform gate."""
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        nn.init.zeros_(self.direction.weight)
        if self.sector_direction is not None:
            nn.init.zeros_(self.sector_direction.weight)
        nn.init.ones_(self.loading)
        nn.init.zeros_(self.bias)

    def neighbour_mean(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """``m`` of the module docstring. Shapes: -> ``[N, F]`` (zeros for isolated stocks)."""
        return _weighted_mean(x, edge_index, torch.sigmoid(self.gate(edge_attr)))

    def sector_neighbour_mean(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """``m^s`` of the module docstring. Shapes: -> ``[N, F]`` (zeros without same-sector in-edges)."""
        return _weighted_mean(x, edge_index, edge_attr[:, SAME_SECTOR : SAME_SECTOR + 1])

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        d = self.direction(self.neighbour_mean(x, edge_index, edge_attr))  # [N, 1]
        if self.sector_direction is not None:
            d = d + self.sector_direction(self.sector_neighbour_mean(x, edge_index, edge_attr))  # [N, 1]
        return torch.where(self.is_anchor, d, d.detach() * self.loading) + self.bias  # [N, K]
