"""How many threads "every core" means: the CPU affinity, capped by a cgroup CPU quota."""

import os

import pytest

from service.inference import usable_cores


@pytest.fixture
def cores():
    return len(os.sched_getaffinity(0))


def write_cpu_max(tmp_path, text):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return str(path)


def test_without_a_quota_every_core_of_the_affinity_counts(tmp_path, cores):
    assert usable_cores(write_cpu_max(tmp_path, "max 100000\n")) == cores
    assert usable_cores(str(tmp_path / "missing")) == cores


@pytest.mark.parametrize("quota, expected", [(50_000, 1), (100_000, 1), (150_000, 2),
                                             (10_000_000, None)])
def test_a_quota_caps_the_cores_rounded_up(tmp_path, cores, quota, expected):
    # A quota above the cores there are changes nothing (None: the affinity's count).
    found = usable_cores(write_cpu_max(tmp_path, f"{quota} 100000\n"))
    assert found == min(cores, expected or cores)


@pytest.mark.parametrize("text", ["", "garbage", "100000 0", "x y"])
def test_a_file_it_cannot_read_means_no_quota(tmp_path, cores, text):
    assert usable_cores(write_cpu_max(tmp_path, text)) == cores
