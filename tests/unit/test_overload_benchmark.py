"""The overload benchmark's arithmetic: percentiles, the service's p99 from its histogram,
the figures the targets are judged on, and the CPUs it may run the services on."""

import argparse
import os

import pytest

from benchmarks.overload import cpu_list, overload_figures, percentile, server_p99_ms


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


def test_the_overload_figures_count_200s_within_the_budget_against_capacity():
    answers = [(200, 0.2, 1.0), (200, 0.4, 2.0), (200, 1.5, 3.0), (503, 0.005, 3.5),
               (503, 0.05, 4.0), (0, 1.0, 5.0)]
    figures = overload_figures("steady", answers, seconds=2.0, budget=1.0, capacity=1.0)
    assert figures["steady_200_in_budget_per_second"] == 1.0  # the 1.5 s answer is late
    assert figures["steady_share_of_capacity"] == 1.0
    assert figures["steady_timeouts"] == 1
    assert figures["steady_refusals_per_second"] == 1.0
    assert figures["steady_refused_p50_ms"] == pytest.approx(50.0)
    assert figures["steady_accepted_p99_ms"] == pytest.approx(1500.0)
    assert overload_figures("overload", [], 1.0, 1.0, 0.0)["overload_share_of_capacity"] is None


def test_the_service_cpus_must_leave_the_load_generator_at_least_one():
    usable = sorted(os.sched_getaffinity(0))
    with pytest.raises(argparse.ArgumentTypeError):
        cpu_list(",".join(map(str, usable)))  # all of them
    with pytest.raises(argparse.ArgumentTypeError):
        cpu_list(str(max(usable) + 1))  # not this machine's
    if len(usable) > 1:
        assert cpu_list(str(usable[0])) == {usable[0]}
