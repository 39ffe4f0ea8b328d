"""Reference implementations the tests (and bench/bench_model.py) compare the product code with.

Straightforward, slow versions of vectorized product code: never imported by ``atft``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from atft.graph.builder import ROW_CHUNK, GraphBuilder, _corr_rows, _prepare
from atft.model.gat import GraphAttentionEncoder
from atft.model.vsn import VariableSelectionNetwork

RAW_GRAPH = {"threshold": 0.3, "residual": "none", "rank_by": "abs", "sector_k": 0}  # the raw |rho| graph of the graph tests


def raw_builder(**kw: object) -> GraphBuilder:
    """A builder on raw returns ranked by |rho| above 0.3 unless ``kw`` says otherwise."""
    return GraphBuilder(**{**RAW_GRAPH, **kw})  # type: ignore[arg-type]


def pairwise_corr(returns: np.ndarray) -> tuple[Tensor, Tensor]:
    """Pearson correlation of every pair over their common observations (full matrix; for checks).

    Shapes:
        returns: ``[L, N]`` (NaN missing) -> (rho ``[N, N]`` float32, NaN where undefined;
        counts ``[N, N]`` float32 of overlapping observations).
    """
    m, x, x2 = _prepare(returns)
    parts = [_corr_rows(m, x, x2, r0, min(r0 + ROW_CHUNK, m.shape[1])) for r0 in range(0, m.shape[1], ROW_CHUNK)]
    if not parts:
        return torch.zeros((0, 0)), torch.zeros((0, 0))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def loop_reference(vsn: VariableSelectionNetwork, x: Tensor) -> tuple[Tensor, Tensor]:
    """The same VSN written the straightforward way: a Python loop over features, sharing weights.

    Both forms: per-feature width d = ``vsn.feature_size`` (= H: full width, no projection; < H:
    the selection-weighted sum at d, then ``vsn.project`` to H). For tests and the benchmark only
    (eval mode, no dropout). Shapes as ``VariableSelectionNetwork``.
    """
    n, t, f = x.shape
    flat = x.reshape(n * t, f)
    g = vsn.feature_grns
    glu, norm = g.gate_norm.glu.fc, g.gate_norm.norm
    # one view per feature, taken once (unbind's backward is a single stack, as for F modules)
    per_feature = [p.unbind(0) for p in (vsn.embed.weight, vsn.embed.bias, g.fc1.weight, g.fc1.bias,
                                         g.fc2.weight, g.fc2.bias, glu.weight, glu.bias,
                                         norm.weight, norm.bias)]
    outs = []
    for i, (we, be, w1, b1, w2, b2, wg, bg, wn, bn) in enumerate(zip(*per_feature, strict=True)):
        e = flat[:, i : i + 1] @ we + be  # [B, d]
        eta1 = F.elu(e @ w1 + b1) @ w2 + b2  # [B, d]
        value, gate = (eta1 @ wg + bg).chunk(2, dim=-1)
        y = F.layer_norm(e + value * torch.sigmoid(gate), (vsn.feature_size,), eps=norm.eps)
        outs.append(y * wn + bn)  # [B, d]
    xi = torch.stack(outs, dim=1)  # [B, F, d]
    v = vsn.weights(flat)  # [B, F]
    out = (xi * v.unsqueeze(-1)).sum(dim=1)  # [B, d]
    if vsn.project is not None:
        out = out @ vsn.project.weight.t() + vsn.project.bias  # [B, H]
    return out.reshape(n, t, vsn.hidden_size), v.reshape(n, t, f)


def pyg_self_loop_reference(gat: GraphAttentionEncoder, x: Tensor, edge_index: Tensor,
                            edge_attr: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """``GraphAttentionEncoder`` the way PyG does it: edges dropped by a boolean mask
    (``torch.rand(E) >= p``, as ``dropout_edge``), then ``GATv2Conv(add_self_loops=True,
    fill_value="mean")`` (input self-loops removed by a mask, one per node appended). Same weights
    and RNG stream as ``gat`` in eval mode or without attention dropout. Shapes as the encoder.
    """
    if gat.training and gat.edge_dropout > 0 and edge_index.shape[1] > 0:
        kept = torch.rand(edge_index.shape[1]) >= gat.edge_dropout
        edge_index, edge_attr = edge_index[:, kept], edge_attr[kept]
    h, attention = x, []
    for conv, norm in zip(gat.convs, gat.norms, strict=True):
        conv.add_self_loops, conv.fill_value = True, "mean"
        try:
            m, (ei, alpha) = conv(h, edge_index, edge_attr, return_attention_weights=True)
        finally:
            conv.add_self_loops = False
        attention.append((ei, alpha))
        h = norm(h + gat.dropout(F.elu(m)))
    return h, attention
