"""Graph path: stacked GATv2 layers over the per-day stock graph, residual + LayerNorm.

Each layer (``GATv2Conv``, Brody et al. 2022, edge features ``[rho, same_sector, same_market]``)::

    m = GATv2Conv(h, edge_index, edge_attr)     heads averaged (concat=False), self-loops added
    h = LayerNorm(h + Dropout(ELU(m)))

Self-loops carry the mean of the node's incoming edge features (``fill_value="mean"``; zeros for
an isolated node), so a stock without neighbours (N = 1, E = 0) attends only to itself and keeps
a representation computed from its own temporal state. In training a share ``edge_dropout`` of
the edges is dropped per step (an edge is kept when ``torch.rand >= edge_dropout``, seeded by the
torch RNG) before the layers. Graphs are block-diagonal over packed days, so message passing
never crosses days.

Without host synchronisation: removing edges by a boolean mask (PyG's ``dropout_edge`` and
``remove_self_loops``) has a data-dependent size, which a GPU can only tell the host by waiting.
Instead, every edge that is not used (dropped, or a self-loop of the input, which GATv2's own
self-loop replaces) is redirected to a phantom node ``N`` that no output reads (``with_self_loops``):
the softmax and the sums of the real nodes see exactly the kept edges, in the same order, so the
function is the one of ``GATv2Conv(add_self_loops=True)`` after the edges were removed
(tests/test_model_blocks.py compares). Only the attention readout (``return_attention``, never
asked for in training) filters the phantom edges out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import scatter

EDGE_DIM = 3  # [rho, same_sector, same_market]


def with_self_loops(edge_index: Tensor, edge_attr: Tensor, keep: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Edges not kept go to the phantom node ``n``; then one self-loop per node ``0..n-1`` whose
    features are the mean of its kept incoming edges' (zeros without any), appended as PyG does.

    Shapes:
        edge_index ``[2, E]``, edge_attr ``[E, D]``, keep ``[E]`` bool
        -> edge_index ``[2, E + n]`` (targets in ``0..n``), edge_attr ``[E + n, D]``.
    """
    src, dst = edge_index[0], torch.where(keep, edge_index[1], n)  # [E]
    loop_attr = scatter(edge_attr, dst, 0, n + 1, "mean")[:n]  # [n, D]
    loops = torch.arange(n, device=edge_index.device).view(1, -1).repeat(2, 1)  # [2, n]
    return torch.cat([torch.stack([src, dst]), loops], dim=1), torch.cat([edge_attr, loop_attr])


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
        attention (on request): per layer ``(edge_index [2, E'], alpha [E', heads])`` over the
        kept edges, self-loops included.
    """

    def __init__(self, hidden_size: int, *, heads: Sequence[int] = (4, 2), dropout: float = 0.0,
                 edge_dropout: float = 0.0, edge_dim: int = EDGE_DIM) -> None:
        super().__init__()
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        self.edge_dropout = edge_dropout
        self.convs = nn.ModuleList(
            GATv2Conv(hidden_size, hidden_size, heads=h, concat=False, dropout=dropout,
                      add_self_loops=False, edge_dim=edge_dim)  # self-loops: with_self_loops
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
        n = x.shape[0]
        keep = edge_index[0] != edge_index[1]  # [E]: the input's self-loops are replaced
        if self.training and self.edge_dropout > 0 and edge_index.shape[1] > 0:
            keep = keep & (torch.rand(edge_index.shape[1], device=x.device) >= self.edge_dropout)
        edge_index, edge_attr = with_self_loops(edge_index, edge_attr, keep, n)  # [2, E + N], [E + N, 3]
        attention: list[tuple[Tensor, Tensor]] = []
        h = x  # [N, H]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            hp = torch.cat([h, h.new_zeros(1, h.shape[1])])  # [N + 1, H]: row N is the phantom
            if return_attention:
                m, (ei, alpha) = conv(hp, edge_index, edge_attr, return_attention_weights=True)
                real = ei[1] < n  # the attention readout alone filters (a host sync)
                attention.append((ei[:, real], alpha[real]))  # [2, E'], [E', heads]
            else:
                m = conv(hp, edge_index, edge_attr)  # [N + 1, H]
            h = norm(h + self.dropout(F.elu(m[:n])))  # [N, H]
        return h, attention
