"""The service's CPUs: how many threads "every core" means (the CPU affinity, capped by a
cgroup CPU quota), and each gunicorn worker's own share of them."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from service.process.cpus import service_cores, usable_cores, worker_share
from tests.support import ROOT


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


def test_cores_can_be_counted_for_a_given_set_of_cpus(tmp_path):
    assert usable_cores(write_cpu_max(tmp_path, "max 100000\n"), {3, 5, 7}) == 3
    assert usable_cores(write_cpu_max(tmp_path, "100000 100000\n"), {3, 5, 7}) == 1


def test_outside_a_pinned_worker_the_service_has_this_threads_cpus(tmp_path, cores):
    assert service_cores(write_cpu_max(tmp_path, "max 100000\n")) == cores


@pytest.mark.parametrize("cpus, workers, shares", [
    ({0, 1}, 2, [{0}, {1}]),
    ({0, 1, 2, 3}, 2, [{0, 1}, {2, 3}]),
    ({2, 5, 9, 11}, 4, [{2}, {5}, {9}, {11}]),
    ({4, 6, 8, 10, 12, 14}, 3, [{4, 6}, {8, 10}, {12, 14}]),
])
def test_workers_split_the_cpus_evenly_without_sharing_one(cpus, workers, shares):
    assert [worker_share(cpus, slot, workers) for slot in range(workers)] == shares


def test_a_worker_forked_during_a_reload_wraps_round_to_a_share():
    # Slots 2 and 3 are taken while slots 0 and 1 still finish their requests.
    assert worker_share({0, 1}, 2, 2) == {0} and worker_share({0, 1}, 3, 2) == {1}


@pytest.mark.parametrize("cpus, slot, workers", [
    ({0, 1}, 0, 1),  # a lone worker keeps every CPU
    ({0, 1}, 0, 3),  # more workers than CPUs: no even split, the kernel balances them
    ({0, 1, 2}, 1, 2),  # 3 CPUs for 2 workers: no equal parts either
    ({0, 1}, None, 2),  # a worker without a slot (more than there are)
])
def test_no_share_where_no_even_split_exists(cpus, slot, workers):
    assert worker_share(cpus, slot, workers) is None


PINNED_PROCESS = textwrap.dedent("""
    import json, os, threading
    from service.process import cpus
    before = sorted(os.sched_getaffinity(0))
    cpus.pin_worker(1, 2)
    seen = {}
    def note(key):
        seen[key] = sorted(os.sched_getaffinity(0))
    started = threading.Thread(target=note, args=("thread",))
    started.start(); started.join()
    with cpus.on_service_cpus():
        widened = sorted(os.sched_getaffinity(0))
        inside = threading.Thread(target=note, args=("inside",))
        inside.start(); inside.join()
    print(json.dumps({"before": before, "pinned": sorted(os.sched_getaffinity(0)),
                      "service": sorted(cpus.service_cpus()), "widened": widened, **seen}))
""")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least two CPUs")
def test_a_pinned_worker_keeps_to_its_share_except_for_what_it_starts_on_the_service_cpus():
    finished = subprocess.run([sys.executable, "-c", PINNED_PROCESS], cwd=ROOT,
                              capture_output=True, text=True, check=True)
    found = json.loads(finished.stdout)
    every = found["before"]
    second_half = every[len(every) // 2:]
    assert found["pinned"] == second_half and found["thread"] == second_half
    assert found["service"] == every
    # Inside on_service_cpus the thread, and threads it starts, may run on every CPU.
    assert found["widened"] == every and found["inside"] == every


FIRST_THREAD_PROCESS = textwrap.dedent("""
    import json, os, subprocess, sys, threading
    from service.process import cpus
    try:
        cpus.run_this_thread_first()
    except PermissionError:
        print(json.dumps({"refused": True}))
        raise SystemExit
    seen = {}
    started = threading.Thread(target=lambda: seen.update(thread=os.sched_getscheduler(0)))
    started.start(); started.join()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                           capture_output=True, text=True, check=True)
    print(json.dumps({"own": os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK,
                      "priority": os.sched_getparam(0).sched_priority,
                      "thread": seen["thread"], "child": int(child.stdout)}))
""")


def test_a_thread_run_first_is_real_time_and_what_it_starts_is_ordinary():
    # In a process of its own: the test runner's threads stay ordinary.
    finished = subprocess.run([sys.executable, "-c", FIRST_THREAD_PROCESS], cwd=ROOT,
                              capture_output=True, text=True, check=True)
    found = json.loads(finished.stdout)
    if found.get("refused"):
        pytest.skip("this system allows no real-time priority (no CAP_SYS_NICE, RLIMIT_RTPRIO 0)")
    assert found == {"own": os.SCHED_FIFO, "priority": 1, "thread": os.SCHED_OTHER,
                     "child": os.SCHED_OTHER}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="dropping a capability takes root and util-linux's setpriv")
def test_where_the_system_refuses_real_time_priority_the_thread_stays_ordinary():
    # As a container without the right: CAP_SYS_NICE dropped, and RLIMIT_RTPRIO 0.
    refused = subprocess.run(
        ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice",
         "prlimit", "--rtprio=0", sys.executable, "-c",
         "import os\nfrom service.process import cpus\ntry:\n    cpus.run_this_thread_first()\n"
         "except PermissionError:\n    print(os.sched_getscheduler(0))\n"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert refused.stdout.strip() == str(os.SCHED_OTHER)
