"""Unit tests of the model blocks: GRN family, VSN, FAN/SAN, TFT encoder, GAT, fusion, heads."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atft.model import vsn as vsn_module
from atft.model.adaptive_norm import FrequencyAdaptiveNorm, SliceAdaptiveNorm
from atft.model.fusion import GatedFusion
from atft.model.gat import GraphAttentionEncoder
from atft.model.grn import GLU, GatedResidualNetwork, GroupedLinear
from atft.model.heads import MultiHorizonHeads, QuantileHead
from atft.model.tft import TemporalEncoder
from atft.model.vsn import VariableSelectionNetwork, params_per_feature
from tests.reference import loop_reference, pyg_self_loop_reference

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread, restored after the module


# ---------------------------------------------------------------- GRN family
def test_grouped_linear_equals_one_linear_per_group() -> None:
    torch.manual_seed(0)
    lin = GroupedLinear(3, 4, 5)
    x = torch.randn(3, 7, 4)
    want = torch.stack([x[g] @ lin.weight[g] + lin.bias[g] for g in range(3)])
    torch.testing.assert_close(lin(x), want)


def test_glu_literal_values() -> None:
    glu = GLU(1, 1)
    with torch.no_grad():
        glu.fc.weight.copy_(torch.tensor([[2.0], [0.0]]))
        glu.fc.bias.copy_(torch.tensor([1.0, 0.0]))
    # value = 2x + 1, gate = sigmoid(0) = 0.5
    torch.testing.assert_close(glu(torch.tensor([[1.0], [-0.5]])), torch.tensor([[1.5], [0.0]]))


def test_grouped_grn_equals_independent_grns() -> None:
    torch.manual_seed(0)
    grouped = GatedResidualNetwork(4, 6, 4, groups=2).eval()
    x = torch.randn(2, 5, 4)
    for g in range(2):
        single = GatedResidualNetwork(4, 6, 4).eval()
        with torch.no_grad():
            single.fc1.weight.copy_(grouped.fc1.weight[g].t())
            single.fc1.bias.copy_(grouped.fc1.bias[g])
            single.fc2.weight.copy_(grouped.fc2.weight[g].t())
            single.fc2.bias.copy_(grouped.fc2.bias[g])
            single.gate_norm.glu.fc.weight.copy_(grouped.gate_norm.glu.fc.weight[g].t())
            single.gate_norm.glu.fc.bias.copy_(grouped.gate_norm.glu.fc.bias[g])
            single.gate_norm.norm.weight.copy_(grouped.gate_norm.norm.weight[g])
            single.gate_norm.norm.bias.copy_(grouped.gate_norm.norm.bias[g])
        torch.testing.assert_close(grouped(x)[g], single(x[g]))


def test_grn_resamples_skip_when_widths_differ() -> None:
    assert GatedResidualNetwork(4, 8, 4).skip is None
    grn = GatedResidualNetwork(3, 8, 5)
    assert isinstance(grn.skip, torch.nn.Linear)
    assert grn(torch.randn(2, 3)).shape == (2, 5)


# ---------------------------------------------------------------- VSN
def _equals_loop_reference(vsn: VariableSelectionNetwork) -> torch.Tensor:
    """The VSN on a [3, 4, 7] input equals the per-feature loop (tests/reference.py); its weights."""
    x = torch.randn(3, 4, 7)
    out, w = vsn(x)
    ref_out, ref_w = loop_reference(vsn, x)
    assert out.shape == (3, 4, 8) and w.shape == (3, 4, 7)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w, ref_w)
    return w


@pytest.mark.parametrize("selection", ["softmax", "sigmoid"])
def test_vsn_vectorized_equals_per_feature_loop(selection: str) -> None:
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(7, 8, dropout=0.1, selection=selection).eval()
    w = _equals_loop_reference(vsn)
    if selection == "softmax":
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    else:
        assert not torch.allclose(w.sum(-1), torch.ones(3, 4))
        assert bool(((w > 0) & (w < 1)).all())


def test_vsn_chunked_checkpointed_equals_whole_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    whole = VariableSelectionNetwork(5, 8, dropout=0.0)
    chunked = VariableSelectionNetwork(5, 8, dropout=0.0, chunk_elements=5 * 8 * 3,  # 3 tokens/chunk
                                       checkpoint_elements=5 * 8 * 10)  # 20 tokens > 10: checkpointed
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(4, 5, 5)  # 20 tokens -> 7 chunks
    outs = []
    for m in (whole, chunked):
        out, _ = m(x)
        (out ** 2).sum().backward()
        outs.append((out.detach(), m.feature_grns.fc2.weight.grad.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-6)


def test_vsn_parameters_grow_linearly_with_documented_count() -> None:
    # per feature at H: embedding 2H + GRN (4H^2 + 6H) + selection GRN share (3H + 4)
    assert params_per_feature(256) == 2 * 256 + 4 * 256**2 + 6 * 256 + 3 * 256 + 4 == 264964
    h = 8
    counts = [sum(p.numel() for p in VariableSelectionNetwork(f, h).parameters()) for f in (2, 3, 4)]
    assert counts[2] - counts[1] == counts[1] - counts[0] == params_per_feature(h)


@pytest.mark.parametrize("selection", ["softmax", "sigmoid"])
def test_vsn_small_width_equals_per_feature_loop(selection: str) -> None:
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(7, 8, feature_size=3, dropout=0.1, selection=selection).eval()
    assert vsn.feature_size == 3 and vsn.project is not None
    assert vsn.feature_grns.fc2.weight.shape == (7, 3, 3) and vsn.embed.weight.shape == (7, 1, 3)
    w = _equals_loop_reference(vsn)
    assert bool(((w > 0) & (w < 1)).all())  # selection weights keep their meaning at any width
    if selection == "softmax":
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))


@pytest.mark.parametrize("feature_size", [None, 8, 9, 100])
def test_vsn_width_at_or_above_hidden_is_the_full_width_form(feature_size: int | None) -> None:
    torch.manual_seed(0)
    full = VariableSelectionNetwork(5, 8)
    torch.manual_seed(0)
    same = VariableSelectionNetwork(5, 8, feature_size=feature_size)
    assert same.feature_size == 8 and same.project is None
    assert full.state_dict().keys() == same.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), same.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="feature_size"):
        VariableSelectionNetwork(5, 8, feature_size=0)


def test_vsn_small_width_parameters_per_feature() -> None:
    # per feature at width d: embedding 2d + GRN (4d^2 + 6d) + selection GRN share (3H + 4)
    assert params_per_feature(256, 32) == 4 * 32**2 + 8 * 32 + 3 * 256 + 4 == 5124
    assert params_per_feature(256, 16) == 4 * 16**2 + 8 * 16 + 3 * 256 + 4 == 1924
    counts = [sum(p.numel() for p in VariableSelectionNetwork(f, 16, feature_size=4).parameters()) for f in (2, 3, 4)]
    assert counts[2] - counts[1] == counts[1] - counts[0] == params_per_feature(16, 4)
    # the projection d -> H is paid once, not per feature
    proj = VariableSelectionNetwork(2, 16, feature_size=4).project
    assert proj is not None and sum(p.numel() for p in proj.parameters()) == 4 * 16 + 16


def _value_and_grads(m: VariableSelectionNetwork, x: torch.Tensor) -> list[torch.Tensor]:
    out, w = m(x)
    ((out ** 2).sum() + (w ** 3).sum()).backward()
    return [out.detach(), w.detach(), *(p.grad.clone() for p in m.parameters())]


@pytest.mark.parametrize("feature_size", [None, 3])
def test_vsn_chunked_and_checkpointed_equal_whole_and_plain(feature_size: int | None) -> None:
    torch.manual_seed(0)
    plain = VariableSelectionNetwork(5, 8, feature_size=feature_size, checkpoint_elements=1 << 40)
    d = plain.feature_size
    variants = {"chunked": {"chunk_elements": 5 * d * 3, "checkpoint_elements": 1 << 40},  # 3 tokens/chunk
                "checkpointed": {"checkpoint_elements": 0},  # one chunk, recomputed in backward
                "both": {"chunk_elements": 5 * d * 3, "checkpoint_elements": 0}}
    x = torch.randn(4, 5, 5)  # 20 tokens -> 7 chunks
    want = _value_and_grads(plain, x)
    for name, kw in variants.items():
        m = VariableSelectionNetwork(5, 8, feature_size=feature_size, **kw)
        m.load_state_dict(plain.state_dict())
        assert m.checkpointed(x, 20) == (kw["checkpoint_elements"] == 0), name
        for a, b in zip(want, _value_and_grads(m, x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_vsn_checkpoints_when_activations_exceed_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    vsn = VariableSelectionNetwork(10, 32, feature_size=8)
    x = torch.zeros(1, 1, 10)
    need = vsn.activation_bytes(1000)
    assert need == 1000 * (11 * 10 * 8 + 4 * (32 + 10)) * 4
    monkeypatch.setattr(vsn_module, "available_memory", lambda device: 2 * need - 8)  # half of it: 1 byte short
    assert vsn.checkpointed(x, 1000) and not vsn.checkpointed(x, 999)
    with torch.no_grad():
        assert not vsn.checkpointed(x, 1000)  # nothing kept for backward without gradients
    monkeypatch.undo()
    assert 0 < vsn_module.available_memory(torch.device("cpu")) < 2**50


@pytest.mark.parametrize(("hidden", "feature_size"), [(32, None), (64, 8), (64, 16)])
def test_vsn_activation_estimate_bounds_what_backward_keeps(hidden: int, feature_size: int | None) -> None:
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(12, hidden, feature_size=feature_size, dropout=0.1,
                                   checkpoint_elements=1 << 40).train()
    x = torch.randn(8, 5, 12)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        vsn(x)
    ours = {p.untyped_storage().data_ptr() for p in vsn.parameters()} | {x.untyped_storage().data_ptr()}
    measured = sum(b for k, b in kept.items() if k not in ours)
    assert measured <= vsn.activation_bytes(40) <= 1.35 * measured


# ---------------------------------------------------------------- FAN / SAN
def test_fan_removes_dominant_frequencies_exactly() -> None:
    t = torch.arange(8, dtype=torch.float64)
    wave = 3.0 + 2.0 * torch.cos(2 * math.pi * t / 8)  # DC + frequency 1
    small = 0.1 * torch.cos(2 * math.pi * 3 * t / 8)  # frequency 3
    x = (wave + small).reshape(1, 8, 1).float()
    fan = FrequencyAdaptiveNorm(1, top_k=2)
    torch.testing.assert_close(fan.dominant(x), wave.reshape(1, 8, 1).float(), atol=1e-5, rtol=0)
    # the normalized residual is the frequency-3 wave scaled to unit variance: sqrt(2) cos(...)
    want = (math.sqrt(2) * torch.cos(2 * math.pi * 3 * t / 8)).reshape(1, 8, 1).float()
    torch.testing.assert_close(fan(x), want, atol=2e-3, rtol=0)


def test_san_normalizes_end_aligned_slices_literal() -> None:
    san = SliceAdaptiveNorm(1, slice_len=2, eps=0.0)
    x = torch.tensor([7.0, 1.0, 3.0, 10.0, 20.0]).reshape(1, 5, 1)
    # slices from the end: [10, 20], [1, 3], [7] (length 1 -> identity)
    torch.testing.assert_close(san(x).flatten(), torch.tensor([7.0, -1.0, 1.0, -1.0, 1.0]))


@pytest.mark.parametrize("t", [1, 2, 3, 10])
def test_adaptive_norms_finite_and_identity_at_t1(t: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, t, 6)
    fan, san = FrequencyAdaptiveNorm(6, top_k=3), SliceAdaptiveNorm(6, slice_len=5)
    y = san(fan(x))
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    if t == 1:
        torch.testing.assert_close(y, x)


# ---------------------------------------------------------------- TFT encoder
def test_tft_attention_is_causal_and_last_step_sees_whole_window() -> None:
    torch.manual_seed(0)
    enc = TemporalEncoder(8, lstm_layers=1, attention_heads=2, dropout=0.0).eval()
    x = torch.randn(3, 5, 8)
    out, w = enc(x, return_attention=True)
    assert out.shape == (3, 8) and w is not None and w.shape == (3, 2, 5, 5)
    assert float(w.detach().triu(1).abs().max()) == 0.0  # no step attends to a later one
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 5))
    x2 = x.clone()
    x2[:, 0] += 1.0  # the first step still reaches the last step's output
    assert not torch.allclose(enc(x2)[0], out)
    assert enc(torch.randn(2, 1, 8))[0].shape == (2, 8)  # T = 1


# ---------------------------------------------------------------- GAT
def test_gat_degenerate_graphs_and_edge_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    gat = GraphAttentionEncoder(8, heads=(4, 2), dropout=0.0, edge_dropout=0.5)
    one = gat.eval()(torch.randn(1, 8), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3))[0]
    assert one.shape == (1, 8) and bool(torch.isfinite(one).all())
    x = torch.randn(4, 8)
    ei = torch.tensor([[0, 1, 2], [1, 0, 1]])  # stock 3 isolated
    ea = torch.rand(3, 3)
    h, att = gat(x, ei, ea, return_attention=True)
    assert len(att) == 2 and att[0][1].shape[1] == 4 and att[1][1].shape[1] == 2
    torch.testing.assert_close(gat(x, ei, ea)[0], h)  # eval: no edge dropout, deterministic
    iso = gat(x, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3))[0]
    torch.testing.assert_close(h[3], iso[3])  # isolated stock depends on itself only
    gat.train()
    torch.manual_seed(1)
    a = gat(x, ei, ea)[0]
    torch.manual_seed(2)
    b = gat(x, ei, ea)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, b) and torch.equal(a, gat(x, ei, ea)[0])


@pytest.mark.parametrize("edge_dropout", [0.0, 0.5])
def test_gat_without_host_sync_equals_pyg_self_loops(edge_dropout: float) -> None:
    """The phantom-node edges compute exactly GATv2Conv(add_self_loops=True) on the kept edges."""
    torch.manual_seed(0)
    gat = GraphAttentionEncoder(8, heads=(4, 2), dropout=0.0, edge_dropout=edge_dropout)
    x = torch.randn(6, 8)
    ei = torch.tensor([[0, 1, 2, 3, 3, 4, 5, 1], [1, 0, 1, 3, 4, 3, 4, 5]])  # a self-loop 3 -> 3; 2 has no in-edge
    ea = torch.rand(8, 3)
    for mode in (gat.eval, gat.train):
        mode()
        torch.manual_seed(7)
        h, att = gat(x, ei, ea, return_attention=True)
        torch.manual_seed(7)
        want, want_att = pyg_self_loop_reference(gat, x, ei, ea)
        torch.testing.assert_close(h, want, rtol=1e-5, atol=1e-6)
        for (e1, a1), (e2, a2) in zip(att, want_att, strict=True):
            assert torch.equal(e1, e2)
            torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- fusion and heads
def test_fusion_gate_mixes_convexly() -> None:
    fusion = GatedFusion(2)
    with torch.no_grad():
        fusion.gate.weight.zero_()
        fusion.gate.bias.fill_(math.log(3.0))  # sigmoid = 0.75
    z, g = fusion(torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 8.0]]))
    torch.testing.assert_close(g, torch.tensor([0.75]))
    torch.testing.assert_close(z, torch.tensor([[3.0, 2.0]]))


@settings(deadline=None, max_examples=15)
@given(scale=st.floats(0.1, 50.0), seed=st.integers(0, 1000))
def test_quantiles_ordered_for_any_input(scale: float, seed: int) -> None:
    torch.manual_seed(seed)
    head = QuantileHead(6, [0.1, 0.2, 0.5, 0.8, 0.9])
    q = head(scale * torch.randn(32, 6))
    assert q.shape == (32, 5)
    assert bool((q[:, 1:] >= q[:, :-1]).all())


def test_head_init_gaps_and_median_is_point() -> None:
    torch.manual_seed(0)
    heads = MultiHorizonHeads(8, ["horizon_1d", "horizon_5d"], [0.2, 0.5, 0.8], init_std=0.0)
    preds, point = heads(torch.randn(5, 8))
    assert list(preds) == ["horizon_1d", "horizon_5d"]
    q = preds["horizon_1d"]
    torch.testing.assert_close(point["horizon_1d"], q[:, 1])
    # init_std 0: every stock gets the standard normal's quantile gaps around a constant median
    torch.testing.assert_close(q[:, 2] - q[:, 1], torch.full((5,), 0.841621), atol=1e-5, rtol=0)
    torch.testing.assert_close(q[:, 1] - q[:, 0], torch.full((5,), 0.841621), atol=1e-5, rtol=0)
    assert float(point["horizon_1d"].std()) == 0.0
    with pytest.raises(ValueError, match="0.5"):
        QuantileHead(8, [0.2, 0.8])
