"""The overload benchmark's arithmetic: percentiles, and the service's p99 from its histogram."""

import pytest

from benchmarks.overload import percentile, server_p99_ms


def test_percentiles_are_nearest_rank_in_milliseconds():
    assert percentile([], 0.99) is None
    assert percentile([0.001 * n for n in range(1, 101)], 0.5) == pytest.approx(51.0)
    assert percentile([0.002], 0.99) == pytest.approx(2.0)


def test_the_services_p99_is_the_bucket_that_holds_99_percent_of_the_new_answers():
    before = {"503": {"0.01": 10.0, "0.025": 10.0, "+Inf": 10.0}}
    after = {"503": {"0.01": 110.0, "0.025": 209.0, "0.05": 210.0, "+Inf": 210.0},
             "200": {"0.1": 5.0, "+Inf": 5.0}}
    # 200 new refusals: 100 within 10 ms, 199 within 25 ms, all within 50 ms.
    assert server_p99_ms(before, after, "503") == 25.0
    assert server_p99_ms(before, after, "200") == 100.0
    assert server_p99_ms(before, after, "429") is None
    assert server_p99_ms(after, after, "503") is None  # nothing new
