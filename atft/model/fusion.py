"""Gated fusion of the temporal and graph representations of each stock.

::

    g = sigmoid(w . [z_temporal, z_graph] + b)      one gate per stock, in (0, 1)
    z = g * z_temporal + (1 - g) * z_graph

The gate is returned as a diagnostic (``fusion_gate``): a gate stuck at 1 means the graph path
is being ignored. When the graph path is off the model skips this block (it is ``None``) and
reports a gate of 1 for every stock.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedFusion(nn.Module):
    """Convex per-stock mix of two ``[N, H]`` representations.

    Shapes:
        temporal, graph: ``[N, H]`` -> fused ``[N, H]``, gate ``[N]``.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * hidden_size, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gate starts near 0.5 (bias 0, small weights): both paths contribute from step one."""
        nn.init.xavier_uniform_(self.gate.weight, gain=0.1)
        nn.init.zeros_(self.gate.bias)

    def forward(self, temporal: Tensor, graph: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.sigmoid(self.gate(torch.cat([temporal, graph], dim=-1)))  # [N, 1]
        return g * temporal + (1 - g) * graph, g.squeeze(-1)  # [N, H], [N]
