"""Graph path: stacked GATv2 layers over the per-day stock graph, residual + LayerNorm.

Each layer (``GATv2Conv``, Brody et al. 2022, edge features ``[rho, same_sector, same_market]``)::

    m = GATv2Conv(h, edge_index, edge_attr)     heads averaged (concat=False), self-loops added
    h = LayerNorm(h + Dropout(ELU(m)))

Self-loops carry the mean of the node's incoming edge features (``fill_value="mean"``; zeros for
an isolated node), so a stock without neighbours (N = 1, E = 0) attends only to itself and keeps
a representation computed from its own temporal state. In training a share ``edge_dropout`` of
the edges is dropped per step (``dropout_edge``, seeded by the torch RNG) before the layers.
Graphs are block-diagonal over packed days, so message passing never crosses days.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import dropout_edge

EDGE_DIM = 3  # [rho, same_sector, same_market]


class GraphAttentionEncoder(nn.Module):
    """``len(heads)`` GATv2 layers of width H with residual + LayerNorm.

    Args:
        hidden_size: H (node input and output width).
        heads: attention heads per layer, e.g. ``(4, 2)``.
        dropout: attention-coefficient dropout inside GATv2Conv, and on each layer's update.
        edge_dropout: share of edges dropped per training step.
        edge_dim: edge feature width.

    Shapes:
        x: ``[N, H]``; edge_index: ``[2, E]`` long; edge_attr: ``[E, edge_dim]`` -> ``[N, H]``;
        attention (on request): per layer ``(edge_index [2, E'], alpha [E', heads])``,
        self-loops included.
    """

    def __init__(self, hidden_size: int, *, heads: Sequence[int] = (4, 2), dropout: float = 0.0,
                 edge_dropout: float = 0.0, edge_dim: int = EDGE_DIM) -> None:
        super().__init__()
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        self.edge_dropout = edge_dropout
        self.convs = nn.ModuleList(
            GATv2Conv(hidden_size, hidden_size, heads=h, concat=False, dropout=dropout,
                      add_self_loops=True, edge_dim=edge_dim, fill_value="mean")
            for h in heads
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in heads)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            conv.reset_parameters()
            norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                return_attention: bool = False) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        if self.training and self.edge_dropout > 0 and edge_index.shape[1] > 0:
            edge_index, kept = dropout_edge(edge_index, p=self.edge_dropout, training=True)
            edge_attr = edge_attr[kept]  # [E', 3]
        attention: list[tuple[Tensor, Tensor]] = []
        h = x  # [N, H]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            if return_attention:
                m, (ei, alpha) = conv(h, edge_index, edge_attr, return_attention_weights=True)
                attention.append((ei, alpha))  # [2, E'], [E', heads]
            else:
                m = conv(h, edge_index, edge_attr)  # [N, H]
            h = norm(h + self.dropout(F.elu(m)))  # [N, H]
        return h, attention
