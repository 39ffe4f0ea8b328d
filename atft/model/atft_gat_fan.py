"""ATFT-GAT-FAN: the assembled multi-horizon model (design.md section 4).

::

    h      = VSN(features)                      [N, T, F] -> [N, T, H]  per-feature GRNs
    h      = h + SAN(FAN(h))                    normalized view added to the sequence (optional)
    z_t    = TFT(h)[:, -1]                      [N, H]  LSTM + causal attention, last step
    z_g    = GAT(z_t, edges)                    [N, H]  per-day graph (optional)
    z, g   = Fusion(z_t, z_g)                   [N, H], gate [N]
    q      = Heads(z)                           {horizon_{h}d: [N, Q]}, point = median
    q      = q + Linear(x[:, -1])               optional linear skip of the last-day inputs [N, F]
    q      = q + l_h (v . mean_nbr x[:, -1])    optional linear graph skip (edge-gated neighbour mean)

The linear skip (``model.linear_skip``, zero at init) shifts every quantile of horizon h by
the same linear map of the last-day inputs: a wide-and-deep split in which the linear part of a
low signal-to-noise target is learnt as easily as by a ridge, and the deep part models the rest
(the quantile order is kept because all quantiles move together).

The adaptive norms are added to (not substituted for) the VSN sequence: per-stock temporal
normalization removes each stock's level, which is exactly the cross-sectional information a
return ranking needs. Output contract::

    {"predictions": {"horizon_{h}d": [N, Q]}, "point": {"horizon_{h}d": [N]},
     "fusion_gate": [N], "attention": {...} only when requested}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from atft.config import Config, ModelConfig
from atft.data.batch import DayBatch
from atft.errors import ShapeError
from atft.horizons import output_key
from atft.model.adaptive_norm import FrequencyAdaptiveNorm, SliceAdaptiveNorm
from atft.model.fusion import GatedFusion
from atft.model.gat import GraphAttentionEncoder
from atft.model.graph_skip import NeighbourLinearSkip
from atft.model.heads import MultiHorizonHeads
from atft.model.tft import TemporalEncoder
from atft.model.vsn import VariableSelectionNetwork

log = logging.getLogger(__name__)


def part_parameters(part: nn.Module | nn.Parameter | None) -> list[nn.Parameter]:
    """The parameters of a part of ``ATFT_GAT_FAN.parts()`` (a module, a single parameter, or None)."""
    if part is None:
        return []
    if isinstance(part, nn.Parameter):
        return [part]
    return list(part.parameters())


class ATFT_GAT_FAN(nn.Module):  # noqa: N801 - the model's published name
    """Multi-horizon quantile model over day batches. Blocks take plain args; see ``from_config``.

    Args:
        num_features: F, input features per stock and day.
        horizons: forecast horizons in days (output keys ``horizon_{h}d``).
        hidden_size: H.
        vsn_hidden: per-feature width d of the variable selection (then one Linear d -> H);
            0 or ``>= hidden_size``: the full-width form (``VariableSelectionNetwork``).
        quantiles: increasing levels containing 0.5 (the point forecast).
        gat_heads: heads per GAT layer; None switches the graph path off (``gat``/``fusion`` None).
        adaptive_norm: FAN + SAN on the temporal sequence (off: ``fan``/``san`` None).
        graph_off_reason: why the graph path is off, for the one WARNING logged at construction.
        linear_skip: add ``Linear(F -> horizons)`` of the last-day inputs to every quantile
            (``linear_skip`` None when off).
        graph_skip: add a linear peer effect of the edge-gated mean of the neighbours' last-day
            inputs, its direction learnt on the shortest horizon (``NeighbourLinearSkip``; None
            when off or when the graph path is off).
        graph_skip_sector_mean: the graph skip also maps the plain same-sector neighbour mean
            by a direction of its own.

    Shapes:
        batch.features ``[N, T, F]``, edge_index ``[2, E]``, edge_attr ``[E, 3]``;
        output as in the module docstring.
    """

    def __init__(self, num_features: int, horizons: Sequence[int], *,
                 hidden_size: int = ModelConfig.hidden_size,
                 quantiles: Sequence[float] = (0.2, 0.5, 0.8),
                 vsn_selection: str = ModelConfig.vsn_selection,
                 vsn_hidden: int = ModelConfig.vsn_hidden,
                 lstm_layers: int = ModelConfig.lstm_layers,
                 attention_heads: int = ModelConfig.attention_heads,
                 dropout: float = ModelConfig.dropout,
                 adaptive_norm: bool = ModelConfig.adaptive_norm,
                 fan_top_k: int = ModelConfig.fan_top_k,
                 san_slice_len: int = ModelConfig.san_slice_len,
                 gat_heads: Sequence[int] | None = (4, 2),
                 gat_dropout: float = ModelConfig.gat_dropout,
                 edge_dropout: float = ModelConfig.edge_dropout,
                 head_init_std: float = ModelConfig.head_init_std,
                 graph_off_reason: str = "gat_heads=None",
                 gat_node_inputs: bool = ModelConfig.gat_node_inputs,
                 linear_skip: bool = ModelConfig.linear_skip,
                 graph_skip: bool = ModelConfig.graph_skip,
                 graph_skip_sector_mean: bool = ModelConfig.graph_skip_sector_mean) -> None:
        super().__init__()
        if num_features < 1:
            raise ShapeError(f"num_features must be >= 1, got {num_features}. Fix: set "
                             "model.num_features or pass the data's feature count.")
        self.num_features, self.hidden_size = num_features, hidden_size
        self.keys = [output_key(h) for h in horizons]
        self.quantiles = [float(q) for q in quantiles]
        self.vsn = VariableSelectionNetwork(num_features, hidden_size, feature_size=vsn_hidden or None,
                                            dropout=dropout, selection=vsn_selection)
        self.fan = FrequencyAdaptiveNorm(hidden_size, top_k=fan_top_k) if adaptive_norm else None
        self.san = SliceAdaptiveNorm(hidden_size, slice_len=san_slice_len) if adaptive_norm else None
        # ReZero scale of the FAN/SAN branch, zero at init: the branch is unit-variance by
        # construction (for short windows mostly the highest-frequency residual), so added at
        # full strength it drowns the cross-sectional signal; the model learns how much to use.
        self.norm_scale = nn.Parameter(torch.zeros(hidden_size)) if adaptive_norm else None
        self.tft = TemporalEncoder(hidden_size, lstm_layers=lstm_layers, attention_heads=attention_heads,
                                   dropout=dropout)
        self.gat = (GraphAttentionEncoder(hidden_size, heads=gat_heads, dropout=gat_dropout,
                                          edge_dropout=edge_dropout) if gat_heads is not None else None)
        self.fusion = GatedFusion(hidden_size) if gat_heads is not None else None
        # GAT node features = temporal state + a projection of the last-day inputs, so that the
        # neighbours' own inputs reach the attention directly (the temporal state is trained to
        # predict the stock's own return and need not carry what only its peers care about)
        self.gat_input = (nn.Linear(num_features, hidden_size)
                          if gat_heads is not None and gat_node_inputs else None)
        self.heads = MultiHorizonHeads(hidden_size, self.keys, quantiles, init_std=head_init_std, dropout=dropout)
        self.linear_skip = nn.Linear(num_features, len(self.keys)) if linear_skip else None
        shortest = min(range(len(horizons)), key=lambda j: horizons[j])  # the skip's anchor horizon
        self.graph_skip = (NeighbourLinearSkip(num_features, len(self.keys), anchor=shortest,
                                               sector_mean=graph_skip_sector_mean)
                           if gat_heads is not None and graph_skip else None)
        if self.gat is None:
            log.warning("ATFT_GAT_FAN: the graph path (GAT) is bypassed (%s): predictions use the "
                        "temporal path only, in training and evaluation alike", graph_off_reason)
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg: Config, num_features: int | None = None) -> ATFT_GAT_FAN:
        """Build from ``cfg.model`` / ``cfg.data.horizons`` / ``cfg.graph.enabled``.

        F is ``cfg.model.num_features`` when > 0, else ``num_features``.

        Raises:
            ShapeError: both are given and differ, or neither is.
        """
        m = cfg.model
        if m.num_features > 0:
            if num_features is not None and num_features != m.num_features:
                raise ShapeError(
                    f"model.num_features={m.num_features} but the data has {num_features} features. "
                    f"Fix: set model.num_features={num_features} (or 0 to take it from the data), "
                    "or select the configured features with data.features.")
            f = int(m.num_features)
        elif num_features is None:
            raise ShapeError("model.num_features=0 (take it from the data) but no feature count "
                             "was given. Fix: pass num_features, or set model.num_features.")
        else:
            f = int(num_features)
        reason = f"model.use_gat={m.use_gat}, graph.enabled={cfg.graph.enabled}"
        return cls(f, list(cfg.data.horizons), hidden_size=m.hidden_size, quantiles=list(m.quantiles),
                   vsn_selection=m.vsn_selection, vsn_hidden=m.vsn_hidden, lstm_layers=m.lstm_layers,
                   attention_heads=m.attention_heads, dropout=m.dropout, adaptive_norm=m.adaptive_norm,
                   fan_top_k=m.fan_top_k, san_slice_len=m.san_slice_len,
                   gat_heads=list(m.gat_heads) if cfg.graph_on else None, gat_dropout=m.gat_dropout,
                   edge_dropout=m.edge_dropout, head_init_std=m.head_init_std, graph_off_reason=reason,
                   gat_node_inputs=m.gat_node_inputs, linear_skip=m.linear_skip, graph_skip=m.graph_skip,
                   graph_skip_sector_mean=m.graph_skip_sector_mean)

    def reset_parameters(self) -> None:
        """Re-initialize every block (a fresh, valid model)."""
        for part in (self.vsn, self.fan, self.san, self.tft, self.gat, self.fusion, self.heads,
                     self.graph_skip):
            if part is not None:
                part.reset_parameters()
        if self.norm_scale is not None:
            nn.init.zeros_(self.norm_scale)
        if self.gat_input is not None:
            self.gat_input.reset_parameters()
        if self.linear_skip is not None:
            nn.init.zeros_(self.linear_skip.weight)
            nn.init.zeros_(self.linear_skip.bias)

    def validate(self, batch: DayBatch) -> None:
        """The whole DayBatch contract for this model (F included), values read: the explicit,
        synchronising check for batches that did not come from ``DayBatchLoader``.

        Raises:
            ShapeError: shapes, edge indices or another F. DataError: NaN/inf in the inputs.
        """
        batch.validate(self.num_features, len(self.keys))

    def parts(self) -> dict[str, nn.Module | nn.Parameter | None]:
        """Every top-level part (child module, and the FAN/SAN ReZero scale) for per-part gradient
        norms; the graph path's parts are None when it is switched off (a bypass stays visible)."""
        parts: dict[str, nn.Module | nn.Parameter | None] = dict(self.named_children())
        if self.norm_scale is not None:
            parts["norm_scale"] = self.norm_scale
        for name in ("gat", "fusion"):
            parts.setdefault(name, None)
        return parts

    def forward(self, batch: DayBatch, return_attention: bool = False,
                drop_edges: Sequence[str] = ()) -> dict[str, Any]:
        """Forecast every stock of the batch (output contract in the module docstring).

        ``drop_edges`` names graph parts ("gat", "graph_skip") that get no edges in this call: the
        GAT's own effect and the graph skip's are measured apart (the health checks, the guards).

        No host synchronisation: only shapes are checked here (``DayBatch.validate_shapes``);
        the checks that read values (edge indices, NaN/inf) run where batches are built
        (``DayBatchLoader``) or through ``validate`` (the health suite).

        Raises:
            ShapeError: the batch's shapes break the DayBatch contract or it has another F (both named).
        """
        batch.validate_shapes(self.num_features)
        h, selection = self.vsn(batch.features)  # [N, T, H], [N, T, F]
        if self.fan is not None and self.san is not None and self.norm_scale is not None:
            h = h + self.norm_scale * self.san(self.fan(h))  # [N, T, H]
        z, temporal_attn = self.tft(h, return_attention)  # [N, H]
        graph_attn: list[tuple[Tensor, Tensor]] = []
        if self.gat is not None and self.fusion is not None:
            node = z if self.gat_input is None else z + self.gat_input(batch.features[:, -1])  # [N, H]
            gb = batch.without_edges() if "gat" in drop_edges else batch
            zg, graph_attn = self.gat(node, gb.edge_index, gb.edge_attr, return_attention)
            z, gate = self.fusion(z, zg)  # [N, H], [N]
        else:
            gate = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)  # temporal path only
        predictions, point = self.heads(z)
        last = batch.features[:, -1]  # [N, F]
        lin = self.linear_skip(last) if self.linear_skip is not None else None  # [N, len(keys)]
        if self.graph_skip is not None:
            sb = batch.without_edges() if "graph_skip" in drop_edges else batch
            nbr = self.graph_skip(last, sb.edge_index, sb.edge_attr)  # [N, len(keys)]
            lin = nbr if lin is None else lin + nbr
        if lin is not None:
            predictions = {k: q + lin[:, j : j + 1] for j, (k, q) in enumerate(predictions.items())}
            point = {k: p + lin[:, j] for j, (k, p) in enumerate(point.items())}
        out: dict[str, Any] = {"predictions": predictions, "point": point, "fusion_gate": gate}
        if return_attention:
            out["attention"] = {"temporal": temporal_attn, "graph": graph_attn,
                                "variable_selection": selection}
        return out
