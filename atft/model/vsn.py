"""Variable selection network: one GRN per input feature, vectorized over features.

For every token (stock x window day) with feature scalars ``x_1 .. x_F`` and a per-feature width
``d`` (``feature_size``; ``d = H`` is the full-width form)::

    e_f = x_f * w_f + c_f                       per-feature embedding to d   (GroupedLinear 1 -> d)
    xi_f = GRN_f(e_f)                           one GRN per feature          (grouped GRN d -> d -> d)
    v = sel(GRN_sel(x))                         selection weights [F]; sel = softmax | sigmoid
    s = sum_f v_f * xi_f                        [d]
    out = s                      if d == H      the full-width form (no projection)
    out = W_p s + b_p            if d <  H      one Linear d -> H

The small width follows pytorch-forecasting's ``hidden_continuous_size``: a scalar input needs
far fewer than H dimensions to be transformed, and the per-feature cost is ``~3 d^2`` multiply-adds
per token (``F * 3 * 256^2`` = 16 M per token at F=82, H=256; 0.25 M at d=32). The selection weights
are the same softmax (or sigmoid) over features as in the full-width form, computed from the
raw features, and are still returned for inspection; the projection is applied after the
selection-weighted sum, so ``v_f`` is still the share of feature f in what reaches the model.

All F GRNs run at once as batched matrix products over ``[F, in, out]`` weights (``baddbmm``);
there is no Python loop over features. Since ``e_f`` is an affine image of one scalar, the GRN's
first layer is evaluated exactly in rank-one form, ``W2 e_f + b2 = x_f (W2 w_f) + (W2 c_f + b2)``,
which saves one of the four ``d x d`` products per token and feature (same parameters, same
function; ``tests/reference.py`` computes it the plain way and the tests compare). The selection
GRN reads the raw feature vector ``x`` (``F -> H -> F``): the concatenated embeddings are an
affine function of ``x``, so this loses nothing, and it avoids TFT's flattened ``F*d``-wide input.

Parameters grow linearly with F: each feature costs ``4d^2 + 8d`` in its embedding + GRN plus
``3H + 4`` in the shared selection GRN (``params_per_feature``; tested): 264,964 at d = H = 256
(21.8 M for the VSN at F=82), 5,124 at d=32, H=256.

Width (config ``model.vsn_hidden``, default 16; 0 or ``>= hidden_size`` = full width). Measured
with one torch thread on a 2-core EPYC (bench/bench_train_step.py, configs/production.yaml,
N=256 stocks, interleaved): the training step takes 24.3 s at full width (checkpointed, 698
GFLOP; 17.4 s unchecked) and 1.25 / 1.38 / 1.93 / 2.45 s at d = 8 / 16 / 24 / 32 (35-42 GFLOP):
beyond 16 the cost grows with d, below it the rest of the model dominates. Quality on the embedded
default's validation split (hidden 16, 32 features; bench/bench_vsn_width.py, seeds 0 and 1):
IC@1d / oracle 0.964 at full width, 0.963 at d=8, 0.966 at d=4; the longer horizons move both
ways (20 days: 0.68 / 0.64 / 0.74), i.e. no loss from a small per-feature width was measurable.
The embedded default itself (hidden 16 <= 16) keeps the full-width form. Note that the output
lies in a d-dimensional subspace of R^H per token (the projection is linear), a bottleneck the
full-width form does not have.

Speed of the vectorized form against a per-feature loop (bench/bench_model.py, 2-core EPYC,
forward+backward, 640 tokens): 2-2.7x faster at H=16, 1.5-2x at H=64, 1.0-1.7x at H=256, where both
are GEMM-bound and MKL's single ``mm`` is as fast as its batched ``bmm``; the per-op overhead the
loop pays (~40 ops per feature and step) dominates at small widths and on GPUs (kernel launches).

Memory: the per-feature activations are ``[F, tokens, d]``. Tokens are processed in chunks of
at most ``chunk_elements // (F * d)`` tokens (cache blocking). When the activations one forward
with gradients keeps for backward (``activation_bytes``: measured, tested as an upper bound) would
exceed ``memory_fraction`` of the memory available on
the input's device (CUDA: free + cached; CPU: ``MemAvailable``), every chunk is
gradient-checkpointed (recomputed in backward): the peak stays bounded as F or N grows (failure
mode 11, "VSN memory growing with F until OOM"), and a machine with room for the activations does
not pay the recomputation (1.45x on the full-width step at N=256). ``checkpoint_elements`` fixes
the threshold instead (in elements of ``[F, tokens, d]``; 0 = always).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from atft.model.grn import GatedResidualNetwork, GroupedLinear

SELECTIONS = ("softmax", "sigmoid")
# Floats one forward with gradients keeps for backward, per token: 11 per element of the
# [F, tokens, d] activations plus 4 (H + F) for the selection GRN (measured with saved-tensor hooks
# at 8 <= d <= 256, dropout on: 10.1-10.9 and <= 4; tests/test_model_blocks.py keeps it an upper bound).
FLOATS_PER_FEATURE_ELEMENT, FLOATS_PER_SELECTION_UNIT = 11, 4


def available_memory(device: torch.device) -> int:
    """Bytes that tensors on ``device`` can still take: CUDA free + cached-but-unused, else the
    host's ``MemAvailable`` (``/proc/meminfo``; free pages where that is missing)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class VariableSelectionNetwork(nn.Module):
    """Per-feature GRNs + learned feature selection (see module docstring for the math).

    Args:
        num_features: F, number of scalar input features.
        hidden_size: H, output width (and the selection GRN's width).
        feature_size: d, width of each feature's embedding and GRN. None or ``>= hidden_size``:
            the full-width form (d = H, no projection); below: the per-feature transforms at d,
            then ``project`` (Linear d -> H) after the selection-weighted sum.
        dropout: dropout inside the GRNs.
        selection: "softmax" (weights sum to 1) or "sigmoid" (independent gates in (0, 1)).
        chunk_elements: bound on ``tokens * F * d`` per chunk of the per-feature GRNs (2^24
            measured best of 2^22 / 2^24 / 2^26 on a 2-core EPYC at H=256, F=82 and 400: smaller
            chunks re-read the ``[F, d, d]`` weights too often, larger ones leave the cache).
        checkpoint_elements: None (default): gradient-checkpoint the chunks when the activations
            of one forward would exceed ``memory_fraction`` of the available memory; an int:
            checkpoint when ``tokens * F * d`` exceeds it (0 = always).
        memory_fraction: share of the available memory the VSN activations may take (auto mode).

    Shapes:
        x: ``[N, T, F]`` -> output ``[N, T, H]``, selection weights ``[N, T, F]``.
    """

    def __init__(self, num_features: int, hidden_size: int, *, feature_size: int | None = None,
                 dropout: float = 0.0, selection: str = "softmax", chunk_elements: int = 1 << 24,
                 checkpoint_elements: int | None = None, memory_fraction: float = 0.5) -> None:
        super().__init__()
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got '{selection}'")
        width = hidden_size if feature_size is None else min(feature_size, hidden_size)
        if width < 1:
            raise ValueError(f"feature_size must be >= 1 (None: the full width), got {feature_size}")
        self.num_features, self.hidden_size, self.feature_size = num_features, hidden_size, width
        self.selection, self.chunk_elements = selection, chunk_elements
        self.checkpoint_elements, self.memory_fraction = checkpoint_elements, memory_fraction
        self.embed = GroupedLinear(num_features, 1, width)
        self.feature_grns = GatedResidualNetwork(width, width, width, dropout, groups=num_features)
        self.selection_grn = GatedResidualNetwork(num_features, hidden_size, num_features, dropout)
        self.project = nn.Linear(width, hidden_size) if width < hidden_size else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        self.feature_grns.reset_parameters()
        self.selection_grn.reset_parameters()
        if self.project is not None:
            self.project.reset_parameters()

    def weights(self, x: Tensor) -> Tensor:
        """Selection weights. Shapes: x ``[..., F]`` -> ``[..., F]``."""
        logits = self.selection_grn(x)  # [..., F]
        return F.softmax(logits, dim=-1) if self.selection == "softmax" else torch.sigmoid(logits)

    def transform(self, x: Tensor) -> Tensor:
        """Every feature's GRN output. Shapes: x ``[B, F]`` -> ``[F, B, d]``."""
        xt = x.t().unsqueeze(-1)  # [F, B, 1]
        e = self.embed(xt)  # [F, B, d]
        # fc1(e) = x * (w_f W1_f) + (c_f W1_f + b1_f): rank one in x, no [B, d] x [d, d] product
        fc1, emb = self.feature_grns.fc1, self.embed
        u = torch.bmm(emb.weight, fc1.weight)  # [F, 1, d]
        c = torch.baddbmm(fc1.bias.unsqueeze(1), emb.bias.unsqueeze(1), fc1.weight)  # [F, 1, d]
        return self.feature_grns.from_pre_activation(torch.baddbmm(c, xt, u), e)  # [F, B, d]

    def _select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk of tokens. Shapes: x ``[B, F]`` -> ``[B, d]``, ``[B, F]``."""
        xi = self.transform(x)  # [F, B, d]
        v = self.weights(x)  # [B, F]
        out = torch.bmm(v.unsqueeze(1), xi.transpose(0, 1)).squeeze(1)  # [B, 1, F] @ [B, F, d] -> [B, d]
        return out, v

    def checkpointed(self, x: Tensor, tokens: int) -> bool:
        """Whether a forward over ``tokens`` tokens recomputes its activations in backward."""
        if not torch.is_grad_enabled():
            return False
        if self.checkpoint_elements is not None:
            return tokens * self.num_features * self.feature_size > self.checkpoint_elements
        need = self.activation_bytes(tokens, x.element_size())
        return need > self.memory_fraction * available_memory(x.device)

    def activation_bytes(self, tokens: int, element_size: int = 4) -> int:
        """Upper bound of what one forward over ``tokens`` tokens keeps for backward (no checkpointing)."""
        per_token = (FLOATS_PER_FEATURE_ELEMENT * self.num_features * self.feature_size
                     + FLOATS_PER_SELECTION_UNIT * (self.hidden_size + self.num_features))
        return tokens * per_token * element_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, t, f = x.shape
        flat = x.reshape(n * t, f)  # [B, F], B = N*T tokens
        step = max(1, self.chunk_elements // max(1, f * self.feature_size))
        use_ckpt = self.checkpointed(flat, flat.shape[0])
        outs, weights = [], []
        for chunk in flat.split(step, dim=0):
            if use_ckpt:
                o, v = checkpoint(self._select, chunk, use_reentrant=False)
            else:
                o, v = self._select(chunk)
            outs.append(o)
            weights.append(v)
        out = torch.cat(outs)  # [B, d]
        if self.project is not None:
            out = self.project(out)  # [B, H]
        return out.reshape(n, t, self.hidden_size), torch.cat(weights).reshape(n, t, f)  # [N, T, H], [N, T, F]


def params_per_feature(hidden_size: int, feature_size: int | None = None) -> int:
    """Parameters added by one more input feature at this width (counted on real modules)."""
    a = VariableSelectionNetwork(2, hidden_size, feature_size=feature_size)
    b = VariableSelectionNetwork(3, hidden_size, feature_size=feature_size)
    return sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters())
