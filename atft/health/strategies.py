"""Hypothesis strategies for DayBatch edge cases (bounded: N <= 12, T <= the configured length).

Edge cases named by the issue: N=1, N=2, no edges, isolated stocks, T from 1 to the configured
length, NaN in features, a day whose targets are all missing, several packed days.
"""

from __future__ import annotations

from hypothesis import strategies as st

from atft.synth.batches import make_batch

__all__ = ["batch_specs", "make_batch"]


@st.composite
def batch_specs(draw: st.DrawFn, max_t: int) -> dict[str, object]:
    """Parameters of one edge-case batch."""
    n = draw(st.sampled_from([1, 2, 3, 5, 12]))
    return {
        "n": n,
        "t": draw(st.integers(1, max_t)),
        "edges": draw(st.sampled_from(["none", "random", "isolated"])),
        "seed": draw(st.integers(0, 2**16)),
        "nan_features": draw(st.booleans()),
        "all_targets_missing": draw(st.booleans()),
        "days": draw(st.sampled_from([1, 1, 2])) if n >= 2 else 1,
    }
