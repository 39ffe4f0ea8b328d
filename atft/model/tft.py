"""TFT temporal encoder: LSTM + causal multi-head self-attention + gated residuals.

Per stock, over its own window only (so packed days and stocks never mix here)::

    l = GateAddNorm(LSTM(x), x)                 local processing, gated skip over the LSTM
    a = GateAddNorm(MHA(l, l, l, causal), l)    step t attends to steps <= t of the same window
    y = GateAddNorm(GRN(a), l)                  position-wise feed-forward, skip to the LSTM stage
    out = y[:, -1]                              the last step summarizes the window

Reference: Lim et al. (2021), sections 4.4-4.5 (without static covariates).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atft.model.grn import GateAddNorm, GatedResidualNetwork


class TemporalEncoder(nn.Module):
    """LSTM -> causal self-attention -> position-wise GRN, last step out.

    Args:
        hidden_size: H (input and output width).
        lstm_layers: stacked LSTM layers.
        attention_heads: heads of the self-attention (H must be divisible by it).
        dropout: dropout on the LSTM output, in the attention and the GRNs.

    Shapes:
        x: ``[N, T, H]`` -> last step ``[N, H]``; attention weights ``[N, heads, T, T]``.
    """

    def __init__(self, hidden_size: int, *, lstm_layers: int = 1, attention_heads: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by attention_heads {attention_heads}")
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=lstm_layers, batch_first=True,
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.lstm_gate = GateAddNorm(hidden_size, hidden_size, dropout)
        self.attention = nn.MultiheadAttention(hidden_size, attention_heads, dropout=dropout,
                                               batch_first=True)
        self.attention_gate = GateAddNorm(hidden_size, hidden_size, dropout)
        self.feed_forward = GatedResidualNetwork(hidden_size, hidden_size, hidden_size, dropout)
        self.output_gate = GateAddNorm(hidden_size, hidden_size, 0.0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lstm.reset_parameters()
        self.attention._reset_parameters()  # in_proj and biases only
        self.attention.out_proj.reset_parameters()
        nn.init.zeros_(self.attention.out_proj.bias)
        for m in (self.lstm_gate, self.attention_gate, self.feed_forward, self.output_gate):
            m.reset_parameters()

    @staticmethod
    def causal_mask(t: int, device: torch.device) -> Tensor:
        """True above the diagonal = step i may not attend to a later step j. Shapes: ``[T, T]``."""
        return torch.ones(t, t, dtype=torch.bool, device=device).triu(1)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        lstm_out, _ = self.lstm(x)  # [N, T, H]
        local = self.lstm_gate(lstm_out, x)  # [N, T, H]
        mask = self.causal_mask(x.shape[1], x.device)
        attn, weights = self.attention(local, local, local, attn_mask=mask,
                                       need_weights=return_attention, average_attn_weights=False)
        a = self.attention_gate(attn, local)  # [N, T, H]
        y = self.output_gate(self.feed_forward(a), local)  # [N, T, H]
        return y[:, -1], weights  # [N, H], [N, heads, T, T] | None
