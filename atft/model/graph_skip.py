"""Linear graph skip: a linear map of the neighbours' last-day inputs, added to every quantile.

The graph counterpart of the model's linear skip (``model.linear_skip``), i.e. the "wide" part of
a wide-and-deep graph path, in the spirit of Simplified Graph Convolution (Wu et al. 2019: one
propagation step, then a linear map)::

    w_ij = sigmoid(a . e_ij + b)                      edge gate from e_ij = [rho, same_sector, same_market]
    m_i  = sum_j w_ij x_j / sum_j w_ij                gated mean over i's in-neighbours j (i itself excluded)
    s_i  = m_i W + c                                  one shift per horizon, zero at init

A peer effect that is linear in the neighbours' inputs (industry lead-lag, Cohen and Frazzini
2008) is then learnt as easily as a ridge on neighbour means would learn it, while the GAT models
the rest. The edge gate lets the model weight neighbours by their edge features (e.g. prefer
same-sector edges of a correlation graph) instead of a plain mean. It reads the same per-day
graph as the GAT (block-diagonal over packed days, so no mixing across days) and is off whenever
the graph path is off (``model.use_gat=false`` / ``graph.enabled=false`` switch it off too).
A stock without neighbours gets ``m_i = 0`` (only the bias ``c``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter


class NeighbourLinearSkip(nn.Module):
    """Edge-gated neighbour mean of the inputs, then ``Linear(F -> K)``.

    Args:
        num_features: F, input features per stock.
        out_features: K, one output per horizon.
        edge_dim: width of the edge features.

    Shapes:
        x: ``[N, F]``; edge_index: ``[2, E]`` long (row 0 source j, row 1 target i);
        edge_attr: ``[E, edge_dim]`` -> ``[N, K]``.
    """

    def __init__(self, num_features: int, out_features: int, edge_dim: int = 3) -> None:
        super().__init__()
        self.gate = nn.Linear(edge_dim, 1)
        self.linear = nn.Linear(num_features, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero map (the skip starts switched off) and a uniform gate (a plain mean)."""
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def neighbour_mean(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """``m`` of the module docstring. Shapes: -> ``[N, F]`` (zeros for isolated stocks)."""
        n = x.shape[0]
        src, dst = edge_index[0], edge_index[1]
        w = torch.sigmoid(self.gate(edge_attr)) * (src != dst).unsqueeze(-1)  # [E, 1]; self-loops weigh 0
        total = scatter(w * x[src], dst, dim=0, dim_size=n, reduce="sum")  # [N, F]
        weight = scatter(w, dst, dim=0, dim_size=n, reduce="sum")  # [N, 1]
        return total / weight.clamp_min(1e-6)  # [N, F]

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        return self.linear(self.neighbour_mean(x, edge_index, edge_attr))  # [N, K]
