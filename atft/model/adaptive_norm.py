"""Adaptive normalization of the temporal sequence: FAN and SAN.

Both act on the real temporal sequence ``[N, T, H]`` (one ``[T]`` series per stock and channel),
never on a vector copied over time (failure mode 10: there FAN leaves rounding noise and SAN
scales it to unit variance). Statistics over a single step are undefined, so a window (or a
slice) of length 1 uses mean 0 and std 1: for ``T = 1`` both blocks reduce to their learnable
affine map ``gamma * x + beta`` (the identity at init), never NaN.

FAN (frequency adaptive normalization, after Ye et al. 2024). Per stock n and channel h, with
``X = rfft(x[n, :, h])`` (``K = T // 2 + 1`` frequencies) and ``k' = min(top_k, K - 1)``::

    S = indices of the k' largest |X_k|            (dominant, non-stationary components)
    d = irfft(X * 1[k in S], n=T)                  (their time-domain part)
    r = x - d                                      (residual)
    FAN(x) = gamma * (r - mean_t r) / sqrt(var_t r + eps) + beta

SAN (slice adaptive normalization, after Liu et al. 2023). The window is cut into slices of
``slice_len`` steps aligned to the END (the latest slice is always complete; the oldest may be
shorter), and every slice is normalized by its own statistics::

    SAN(x)[t] = gamma * (x[t] - mean_s(t)) / sqrt(var_s(t) + eps) + beta

``gamma, beta`` are ``[H]`` learnable vectors in both blocks.

Optional (``model.adaptive_norm``). Measured across the family of synthetic markets (issue 16,
docs/decisions.md): at T = 5 the trained branch is 3-10 % of the sequence's RMS and moves the
forecast by 1-3 % of its spread; dropping it moved validation IC@1d by <= 0.0003 on every world.
Both blocks remove each series' level over the window, where a persistent feature's signal is;
they are built for long, non-stationary windows (T = 20 in the production config).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _affine_params(hidden_size: int) -> tuple[nn.Parameter, nn.Parameter]:
    return nn.Parameter(torch.ones(hidden_size)), nn.Parameter(torch.zeros(hidden_size))


class FrequencyAdaptiveNorm(nn.Module):
    """Remove the top-k dominant frequencies of each series, normalize the residual.

    Shapes:
        input: ``[N, T, H]``; output: ``[N, T, H]``.
    """

    def __init__(self, hidden_size: int, *, top_k: int = 3, eps: float = 1e-5) -> None:
        super().__init__()
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        self.top_k, self.eps = top_k, eps
        self.gamma, self.beta = _affine_params(hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gamma)
        nn.init.zeros_(self.beta)

    def dominant(self, x: Tensor) -> Tensor:
        """Time-domain part of the k' dominant frequencies. Shapes: ``[N, T, H]`` -> same."""
        t = x.shape[1]
        spec = torch.fft.rfft(x.float(), dim=1)  # [N, K, H] complex
        k = min(self.top_k, spec.shape[1] - 1)
        if k <= 0:
            return torch.zeros_like(x)
        idx = spec.abs().topk(k, dim=1).indices  # [N, k, H]
        mask = torch.zeros(spec.shape, dtype=torch.bool, device=x.device).scatter_(1, idx, True)
        return torch.fft.irfft(spec * mask, n=t, dim=1).to(x.dtype)  # [N, T, H]

    def forward(self, x: Tensor) -> Tensor:
        r = x - self.dominant(x)  # [N, T, H]
        if x.shape[1] < 2:
            return self.gamma * r + self.beta
        mean = r.mean(dim=1, keepdim=True)  # [N, 1, H]
        var = r.var(dim=1, keepdim=True, unbiased=False)
        return self.gamma * (r - mean) / torch.sqrt(var + self.eps) + self.beta


class SliceAdaptiveNorm(nn.Module):
    """Normalize each slice of ``slice_len`` steps by its own mean and std, learnable affine.

    Shapes:
        input: ``[N, T, H]``; output: ``[N, T, H]``.
    """

    def __init__(self, hidden_size: int, *, slice_len: int = 5, eps: float = 1e-5) -> None:
        super().__init__()
        if slice_len < 1:
            raise ValueError(f"slice_len must be >= 1, got {slice_len}")
        self.slice_len, self.eps = slice_len, eps
        self.gamma, self.beta = _affine_params(hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gamma)
        nn.init.zeros_(self.beta)

    def slice_matrix(self, t: int, device: torch.device) -> Tensor:
        """One-hot slice membership, end-aligned. Shapes: ``[S, T]`` float."""
        sid = (t - 1 - torch.arange(t, device=device)) // self.slice_len  # 0 = latest slice
        num = (t - 1) // self.slice_len + 1  # sid.max() + 1, known on the host (no device sync)
        return (sid.unsqueeze(0) == torch.arange(num, device=device).unsqueeze(1)).float()

    def forward(self, x: Tensor) -> Tensor:
        m = self.slice_matrix(x.shape[1], x.device).to(x.dtype)  # [S, T]
        count = m.sum(dim=1)  # [S]
        single = (count < 2)[:, None]  # [S, 1]: statistics undefined -> identity
        mean = torch.einsum("st,nth->nsh", m, x) / count[:, None]  # [N, S, H]
        mean = torch.where(single, torch.zeros_like(mean), mean)
        centered = x - torch.einsum("st,nsh->nth", m, mean)  # [N, T, H]
        var = torch.einsum("st,nth->nsh", m, centered * centered) / count[:, None]
        std = torch.where(single, torch.ones_like(var), torch.sqrt(var + self.eps))
        return self.gamma * centered / torch.einsum("st,nsh->nth", m, std) + self.beta
