"""The daily cap's arithmetic (`shared/sync/governor.Limits`): where each part of LeadSync stops."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.sync.governor import Limits


@pytest.mark.parametrize(("quota", "cap", "reserve", "background", "realtime"), [
    (50_000, 80, 5, 37_500, 40_000),
    (10_000, 50, 10, 4_000, 5_000),
    (50_000, 100, 0, 50_000, 50_000),
    (1, 80, 5, 0, 0),
    (200_000, 90, 10, 160_000, 180_000),
])
def test_limits(quota: int, cap: int, reserve: int, background: int, realtime: int) -> None:
    assert Limits.of(quota, cap, reserve) == Limits(background, realtime)


@given(st.integers(1, 10_000_000), st.integers(1, 100), st.integers(0, 99))
def test_the_background_never_stops_after_the_real_time_endpoint_and_neither_passes_the_quota(
        quota: int, cap: int, reserve: int) -> None:
    limits = Limits.of(quota, cap, min(reserve, cap - 1))
    assert 0 <= limits.background <= limits.realtime <= quota
