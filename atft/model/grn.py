"""Gating primitives of the Temporal Fusion Transformer: GLU -> GateAddNorm -> GRN.

Every primitive comes in two layouts chosen by ``groups``:

* ``groups=None``: an ordinary block on ``[..., in]`` (``nn.Linear`` / ``nn.LayerNorm``);
* ``groups=G``: G independent copies of the block, one per group (e.g. one GRN per input
  feature), applied to ``[G, B, in]`` with batched matrix products over a ``[G, in, out]``
  weight (``torch.baddbmm``) - no Python loop over the groups.

Reference: Lim et al. (2021), "Temporal Fusion Transformers", eqs. (2)-(5); the naming follows
pytorch-forecasting's ``sub_modules.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupedLinear(nn.Module):
    """G independent affine maps ``y[g] = x[g] @ W[g] + b[g]``.

    Shapes:
        input: ``[G, B, in]``; output: ``[G, B, out]``; weight ``[G, in, out]``, bias ``[G, out]``.
    """

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.groups, self.in_features, self.out_features = groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same distribution as ``nn.Linear``: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias."""
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)  # [G, B, out]


class GroupedLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine per group.

    Shapes:
        input/output: ``[G, B, dim]``; weight, bias ``[G, dim]``.
    """

    def __init__(self, groups: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(groups, dim))
        self.bias = nn.Parameter(torch.empty(groups, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x, (self.dim,), eps=self.eps)  # [G, B, dim]
        return y * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)


def make_linear(in_features: int, out_features: int, groups: int | None = None) -> nn.Module:
    """``nn.Linear`` when ``groups`` is None, else a ``GroupedLinear``."""
    if groups is None:
        return nn.Linear(in_features, out_features)
    return GroupedLinear(groups, in_features, out_features)


def make_layer_norm(dim: int, groups: int | None = None) -> nn.Module:
    """``nn.LayerNorm`` when ``groups`` is None, else a ``GroupedLayerNorm``."""
    return nn.LayerNorm(dim) if groups is None else GroupedLayerNorm(groups, dim)


class GLU(nn.Module):
    """Gated linear unit ``GLU(x) = (W4 x + b4) * sigmoid(W5 x + b5)`` (TFT eq. 5).

    Shapes:
        input: ``[..., in]`` (or ``[G, B, in]`` grouped); output: ``[..., out]``.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0,
                 groups: int | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc = make_linear(in_features, 2 * out_features, groups)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        value, gate = self.fc(x).chunk(2, dim=-1)  # [..., out] each
        return value * torch.sigmoid(gate)


class GateAddNorm(nn.Module):
    """``LayerNorm(skip + GLU(x))``: the gated residual connection of TFT.

    Shapes:
        x: ``[..., in]``; skip: ``[..., out]``; output: ``[..., out]`` (grouped: leading ``G``).
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0,
                 groups: int | None = None) -> None:
        super().__init__()
        self.glu = GLU(in_features, out_features, dropout, groups)
        self.norm = make_layer_norm(out_features, groups)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.glu.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.norm(skip + self.glu(x))


class GatedResidualNetwork(nn.Module):
    """GRN (TFT eqs. 2-4): ``LayerNorm(skip(a) + GLU(W1 ELU(W2 a + b2) + b1))``.

    ``skip`` is the identity when ``in_features == out_features``, else a linear resampling.

    Shapes:
        input: ``[..., in]`` (grouped: ``[G, B, in]``); output: ``[..., out]``.
    """

    def __init__(self, in_features: int, hidden_size: int, out_features: int,
                 dropout: float = 0.0, groups: int | None = None) -> None:
        super().__init__()
        self.skip = None if in_features == out_features else make_linear(in_features, out_features, groups)
        self.fc1 = make_linear(in_features, hidden_size, groups)
        self.fc2 = make_linear(hidden_size, hidden_size, groups)
        self.gate_norm = GateAddNorm(hidden_size, out_features, dropout, groups)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.skip, self.fc1, self.fc2, self.gate_norm):
            if m is not None:
                m.reset_parameters()

    def forward(self, a: Tensor) -> Tensor:
        skip = a if self.skip is None else self.skip(a)  # [..., out]
        return self.from_pre_activation(self.fc1(a), skip)

    def from_pre_activation(self, pre: Tensor, skip: Tensor) -> Tensor:
        """The GRN after its first layer: ``pre = W2 a + b2`` and ``skip`` already computed.

        Lets a caller that knows a cheaper exact form of ``fc1(a)`` (e.g. the VSN, where ``a``
        is an affine image of a scalar) skip the matrix product.

        Shapes:
            pre: ``[..., hidden]``; skip: ``[..., out]`` -> ``[..., out]``.
        """
        eta1 = self.fc2(F.elu(pre))  # [..., hidden]
        return self.gate_norm(eta1, skip)  # [..., out]
