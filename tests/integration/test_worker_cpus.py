"""gunicorn's workers each run on their own share of the CPUs (service/process/cpus.py), and
each worker's main thread gets a CPU before its other threads, as the kernel reports it for
every thread in /proc."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests import support

EVERY_CPU = frozenset(os.sched_getaffinity(0))

# Two workers are pinned only where the CPUs split into two equal parts.
pytestmark = pytest.mark.skipif(len(EVERY_CPU) < 2 or len(EVERY_CPU) % 2,
                                reason="needs an even number of CPUs")


def parse_cpu_list(text):
    """The CPUs of a kernel CPU list such as '0-3,6'."""
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def cpus_of(pid, thread=None):
    """The CPUs a thread of `pid` may run on (its main thread when none is named)."""
    with open(f"/proc/{pid}/task/{thread or pid}/status") as status:
        line = next(line for line in status if line.startswith("Cpus_allowed_list:"))
    return parse_cpu_list(line.split(":", 1)[1].strip())


def each_thread(pid, read):
    """{thread id: read(pid, thread id)} for every thread of `pid` still there once read."""
    found = {}
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(thread)] = read(pid, int(thread))
        except (OSError, StopIteration, IndexError, ValueError):  # the thread ended meanwhile
            continue
    return found


def threads_cpus(pid):
    """The CPUs of every thread of `pid`, one entry per thread."""
    return list(each_thread(pid, cpus_of).values())


def test_each_worker_has_cpus_of_its_own_and_only_a_lone_call_may_use_every_cpu(
        start_service, models_dir):
    server = start_service(models_dir, workers=2)
    workers = support.forked_workers(server, 2)
    shares = [cpus_of(pid) for pid in workers]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == EVERY_CPU
    assert len(shares[0]) == len(shares[1])
    # Once its model is loaded, each worker also holds the interpreters for a request alone
    # in the service, whose XNNPACK threads may run on every CPU; nothing else may.
    support.poll(lambda: all(EVERY_CPU in threads_cpus(pid) for pid in workers), 60,
                 lambda: f"no thread on every CPU: {[threads_cpus(pid) for pid in workers]}"
                         f"\n{server.log()}")
    for pid, share in zip(workers, shares, strict=True):
        assert set(threads_cpus(pid)) == {share, EVERY_CPU}
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"]))
    answer = requests.post(server.url("/predict"), files={"file": ("red.jpg", image)},
                           timeout=10)
    # The tiny model may call a drawing unknown (label null): a ranked answer is what counts.
    assert answer.status_code == 200 and answer.json()["predictions"][0]["top_k"]


def test_with_pin_workers_0_every_thread_may_run_on_every_cpu(start_service, models_dir):
    server = start_service(models_dir, workers=2, pin_workers=0)
    for pid in support.forked_workers(server, 2):
        assert set(threads_cpus(pid)) == {EVERY_CPU}


def policy_of(pid, thread):
    """A thread's scheduling policy (field 41 of its /proc stat)."""
    with open(f"/proc/{pid}/task/{thread}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[38])


def policies(pid):
    """{thread id: its scheduling policy} for every thread of `pid`."""
    return each_thread(pid, policy_of)


def predict_at_once(server, requests_at_once=16):
    """Send `requests_at_once` predictions together, so that the workers start more request
    threads (from their main threads); all must answer 200."""
    image = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"]))

    def one(_):
        return requests.post(server.url("/predict"), files={"file": ("red.jpg", image)},
                             timeout=30).status_code

    with ThreadPoolExecutor(requests_at_once) as pool:
        assert set(pool.map(one, range(requests_at_once))) == {200}


def main_threads_run_first(server, workers):
    """Whether every worker's main thread runs first; a skip where the system refused it."""
    if "refused it real-time priority" in server.log():
        pytest.skip("this system allows no real-time priority (no CAP_SYS_NICE, RLIMIT_RTPRIO 0)")
    return all(policies(pid).get(pid) == os.SCHED_FIFO for pid in workers)


def test_each_workers_main_thread_alone_runs_first(start_service, models_dir):
    server = start_service(models_dir, workers=2, threads=8)
    workers = support.forked_workers(server, 2)
    # Ready means one worker answers; the other may still be loading its models.
    support.poll(lambda: main_threads_run_first(server, workers), 60,
                 lambda: f"{[policies(pid) for pid in workers]}\n{server.log()}")
    before = {pid: set(policies(pid)) for pid in workers}
    predict_at_once(server)
    started_since = 0
    for pid in workers:
        found = policies(pid)
        assert found.pop(pid) == os.SCHED_FIFO
        # Its request threads, and everything else, are ordinary: those it started since
        # the requests came too.
        assert set(found.values()) == {os.SCHED_OTHER}, found
        started_since += len(set(found) - before[pid])
    assert started_since, "the requests started no thread: nothing was checked"


def test_with_realtime_main_thread_0_no_thread_runs_first(start_service, models_dir):
    server = start_service(models_dir, workers=2, realtime_main_thread=0)
    workers = support.forked_workers(server, 2)
    predict_at_once(server)
    for pid in workers:
        assert set(policies(pid).values()) == {os.SCHED_OTHER}
    assert "real-time priority" not in server.log()
