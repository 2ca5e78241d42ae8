"""The busy flags gunicorn's workers share: one slot each, seen by every other worker."""

import os

import pytest

from service.app import create_app
from service.config import Settings
from service.process import worker_activity
from service.process.worker_activity import WorkerActivity


def test_each_worker_gets_its_own_slot_and_an_exited_one_frees_it():
    activity = WorkerActivity(slots=3)
    slots = [activity.take_slot() for _ in range(3)]
    assert sorted(slots) == [0, 1, 2] and activity.take_slot() is None
    activity.release_slot(1)
    assert activity.take_slot() == 1


def test_a_worker_sees_another_workers_flag_across_the_fork():
    activity = WorkerActivity(slots=4)
    mine, theirs = activity.take_slot(), activity.take_slot()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the other worker: busy, then tells the parent, then waits to be told
        activity.slot = theirs
        activity.request_started()
        os.write(write_end, b"1")
        os._exit(0)
    os.read(read_end, 1)
    os.waitpid(child, 0)
    activity.slot = mine
    assert not activity.others_idle()
    activity.request_started()  # its own flag never counts against itself
    activity.release_slot(theirs)  # the master frees an exited worker's slot, flag and all
    assert activity.others_idle()


def test_a_worker_is_busy_from_its_first_request_in_to_its_last_out():
    activity, other = WorkerActivity(slots=2), WorkerActivity(slots=2)
    other._flags = activity._flags  # two workers' views of the same memory
    activity.slot, other.slot = activity.take_slot(), activity.take_slot()
    activity.request_started()
    activity.request_started()
    activity.request_finished()
    assert not other.others_idle()
    activity.request_finished()
    activity.request_finished()  # one too many never makes the count negative
    assert other.others_idle()
    activity.request_started()
    assert not other.others_idle()


def test_outside_gunicorn_the_process_is_alone():
    activity = WorkerActivity()
    activity.request_started()
    assert activity.slot is None and activity.others_idle()


class CountingActivity:
    def __init__(self):
        self.events = []

    def request_started(self):
        self.events.append("in")

    def request_finished(self):
        self.events.append("out")


@pytest.mark.parametrize("path, status", [("/health/live", 200), ("/nowhere", 404),
                                          ("/predict", 405)])
def test_every_request_is_counted_in_and_out_once(monkeypatch, path, status):
    counting = CountingActivity()
    monkeypatch.setattr(worker_activity, "activity", counting)
    app = create_app(Settings(), start_models=False)
    assert app.test_client().get(path).status_code == status
    assert counting.events == ["in", "out"]


def test_a_worker_sees_the_fewest_connections_other_accepting_workers_hold():
    activity, other, third = (WorkerActivity(slots=4) for _ in range(3))
    other._connections = third._connections = activity._connections  # one memory, three views
    activity.slot, other.slot, third.slot = (activity.take_slot() for _ in range(3))
    assert activity.fewest_connections_elsewhere() is None  # the others do not accept yet
    other.set_connections(5)
    third.set_connections(3)
    activity.set_connections(0)  # its own count never counts against itself
    assert activity.fewest_connections_elsewhere() == 3
    assert third.fewest_connections_elsewhere() == 0
    third.set_connections(None)  # stopped accepting: no longer counted
    assert activity.fewest_connections_elsewhere() == 5
    activity.release_slot(other.slot)  # exited: the master frees its count with its slot
    assert activity.fewest_connections_elsewhere() is None


def test_outside_gunicorn_no_other_worker_holds_connections():
    activity = WorkerActivity()
    activity.set_connections(7)
    assert activity.slot is None and activity.fewest_connections_elsewhere() is None
