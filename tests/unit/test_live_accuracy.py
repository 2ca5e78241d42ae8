"""Live accuracy's statistics, checked against SciPy's, and the evidence rule of `promote`."""

import pytest
from scipy import stats

from service.store.accuracy import (
    LiveAccuracy,
    evidence,
    non_inferiority_test,
    two_proportion_test,
)


@pytest.mark.parametrize("correct, labelled", [(5, 10), (81, 100), (0, 7), (30, 30), (1, 1)])
def test_the_interval_is_wilsons(correct, labelled):
    expected = stats.binomtest(correct, labelled).proportion_ci(0.95, method="wilson")
    assert LiveAccuracy(labelled, correct).interval() == pytest.approx(
        (expected.low, expected.high), abs=1e-9)


def test_no_feedback_has_no_interval():
    assert LiveAccuracy(0, 0).interval() is None
    assert LiveAccuracy(0, 0).describe() == {"labelled": 0, "correct": 0, "interval_95": None}


def test_the_two_proportion_test_is_the_pooled_z_test():
    stable, canary = LiveAccuracy(100, 45), LiveAccuracy(100, 56)
    found = two_proportion_test(stable, canary)
    pooled = 101 / 200
    z = 0.11 / (pooled * (1 - pooled) * (2 / 100)) ** 0.5
    assert found["z"] == pytest.approx(z, abs=1e-3)
    assert found["p_value"] == pytest.approx(2 * stats.norm.sf(z), abs=1e-4)
    assert found["significant_at_0_05"] is False
    assert two_proportion_test(LiveAccuracy(1000, 450), LiveAccuracy(1000, 560))[
        "significant_at_0_05"] is True
    assert two_proportion_test(stable, LiveAccuracy(0, 0)) is None


def test_non_inferiority_passes_only_with_enough_evidence_within_the_margin():
    # Equal shares at large counts: shown no worse than 1 point below.
    assert non_inferiority_test(LiveAccuracy(20000, 18000), LiveAccuracy(20000, 18000),
                                0.01)["passed"]
    # Equal shares at small counts: not shown (the interval is wider than the margin).
    assert not non_inferiority_test(LiveAccuracy(200, 180), LiveAccuracy(200, 180),
                                    0.01)["passed"]
    # A canary clearly worse: never.
    assert not non_inferiority_test(LiveAccuracy(20000, 18000), LiveAccuracy(20000, 17000),
                                    0.01)["passed"]
    found = non_inferiority_test(LiveAccuracy(5000, 4500), LiveAccuracy(5000, 4550), 0.01)
    variance = 0.9 * 0.1 / 5000 + 0.91 * 0.09 / 5000
    z = (0.91 - 0.9 + 0.01) / variance ** 0.5
    assert found["z"] == pytest.approx(z, abs=1e-3)
    assert found["p_value"] == pytest.approx(stats.norm.sf(z), abs=1e-4)


def test_perfect_shares_do_not_pass_on_certainty_they_lack():
    assert not non_inferiority_test(LiveAccuracy(3, 3), LiveAccuracy(3, 3), 0.01)["passed"]


def test_evidence_needs_the_minimum_count_on_both_sides():
    passed, reason = evidence(LiveAccuracy(199, 190), LiveAccuracy(5000, 4900), 200, 0.01)
    assert not passed and "stable has 199" in reason
    passed, reason = evidence(LiveAccuracy(20000, 18000), LiveAccuracy(20000, 18100), 200, 0.01)
    assert passed and "no worse" in reason
