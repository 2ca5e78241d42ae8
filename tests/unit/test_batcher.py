"""The batcher gathers concurrent requests into one model call, and never delays a lone one."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.runtime.batcher import Batcher


class FakeModel:
    """Stands in for ServingModel: records each call's batch size and returns the row sums."""

    def __init__(self, seconds=0.0, fail=False):
        self.seconds = seconds
        self.fail = fail
        self.batch_sizes = []
        self.calls = []
        self.all_cores = []

    def infer(self, images, all_cores=False):
        self.batch_sizes.append(len(images))
        self.all_cores.append(all_cores)
        self.calls.append(images.copy())
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("the model broke")
        return images.reshape(len(images), -1).sum(axis=1, keepdims=True).astype(np.float32)


def images_of(*values):
    """One 1x1x1 image per value, so each image can be told apart in the answer."""
    return np.array(values, dtype=np.uint8).reshape(len(values), 1, 1, 1)


def submit_together(batcher, model, requests):
    """Announce every request first, then submit them all from their own threads."""
    expectations = [batcher.expect().__enter__() for _ in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(batcher.submit, model, images, expectation)
                   for images, expectation in zip(requests, expectations, strict=True)]
        return [future.result(timeout=10) for future in futures]


def test_concurrent_submissions_are_gathered_into_one_model_call():
    model = FakeModel()
    batcher = Batcher(max_batch_size=32, max_wait_seconds=2.0)
    answers = submit_together(batcher, model, [images_of(value) for value in range(8)])
    assert model.batch_sizes == [8]
    assert [answer.tolist() for answer in answers] == [[[value]] for value in range(8)]


def test_a_lone_request_is_not_delayed_by_the_max_wait():
    model = FakeModel()
    batcher = Batcher(max_batch_size=32, max_wait_seconds=2.0)
    started = time.monotonic()
    with batcher.expect() as expectation:
        answer = batcher.submit(model, images_of(5), expectation)
    assert time.monotonic() - started < 1.0
    assert answer.tolist() == [[5]]
    assert model.batch_sizes == [1]


def test_a_lone_request_uses_every_core_only_when_told_it_may():
    model = FakeModel()
    for allowed in (True, False):
        batcher = Batcher(max_batch_size=32, max_wait_seconds=2.0,
                          may_use_all_cores=lambda allowed=allowed: allowed)
        with batcher.expect() as expectation:
            batcher.submit(model, images_of(5), expectation)
    # A gathered batch keeps to its worker's share of the cores, whatever the others do.
    submit_together(batcher, model, [images_of(value) for value in range(4)])
    assert model.all_cores == [True, False, False] and model.batch_sizes == [1, 1, 4]


def test_a_request_waits_for_announced_company_at_most_the_max_wait():
    model = FakeModel()
    batcher = Batcher(max_batch_size=32, max_wait_seconds=0.2)
    straggler = batcher.expect().__enter__()
    started = time.monotonic()
    answer = batcher.submit(model, images_of(1))
    waited = time.monotonic() - started
    straggler.done()
    assert 0.15 <= waited < 1.0
    assert answer.tolist() == [[1]]


def test_an_announced_request_that_gives_up_releases_the_waiting_ones():
    model = FakeModel()
    batcher = Batcher(max_batch_size=32, max_wait_seconds=5.0)
    quitter = batcher.expect().__enter__()
    threading.Timer(0.1, quitter.done).start()
    started = time.monotonic()
    batcher.submit(model, images_of(1))
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("count", [20, 40])
def test_a_multi_image_request_is_one_model_call(count):
    model = FakeModel()
    batcher = Batcher(max_batch_size=32, max_wait_seconds=0.005)
    answer = batcher.submit(model, images_of(*range(count)))
    assert model.batch_sizes == [count]
    assert answer[:, 0].tolist() == list(range(count))


def test_a_batch_never_exceeds_the_max_batch_size_by_joining_requests():
    model = FakeModel()
    batcher = Batcher(max_batch_size=8, max_wait_seconds=2.0)
    answers = submit_together(batcher, model, [images_of(value, value) for value in range(8)])
    assert max(model.batch_sizes) <= 8
    assert sum(model.batch_sizes) == 16
    assert [answer[:, 0].tolist() for answer in answers] == [[value, value] for value in range(8)]


def test_a_model_error_reaches_every_waiting_request_and_the_batcher_keeps_working():
    broken = FakeModel(fail=True)
    batcher = Batcher(max_batch_size=32, max_wait_seconds=2.0)
    expectations = [batcher.expect().__enter__() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.submit, broken, images_of(value), expectation)
                   for value, expectation in enumerate(expectations)]
        for future in futures:
            with pytest.raises(RuntimeError, match="the model broke"):
                future.result(timeout=10)
    assert broken.batch_sizes == [4]
    working = FakeModel()
    assert batcher.submit(working, images_of(3)).tolist() == [[3]]


def test_requests_for_different_models_are_never_mixed_in_one_call():
    first, second = FakeModel(), FakeModel()
    batcher = Batcher(max_batch_size=32, max_wait_seconds=2.0)
    models = [first, second] * 4
    expectations = [batcher.expect().__enter__() for _ in models]
    with ThreadPoolExecutor(len(models)) as pool:
        futures = [pool.submit(batcher.submit, model, images_of(index), expectation)
                   for index, (model, expectation)
                   in enumerate(zip(models, expectations, strict=True))]
        answers = [future.result(timeout=10) for future in futures]
    assert [answer.tolist() for answer in answers] == [[[index]] for index in range(8)]
    assert sorted(np.concatenate(first.calls).ravel().tolist()) == [0, 2, 4, 6]
    assert sorted(np.concatenate(second.calls).ravel().tolist()) == [1, 3, 5, 7]
    assert sum(first.batch_sizes) == sum(second.batch_sizes) == 4


def test_requests_arriving_while_the_model_runs_form_the_next_batch():
    model = FakeModel(seconds=0.2)
    batcher = Batcher(max_batch_size=32, max_wait_seconds=0.005)
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(batcher.submit, model, images_of(0))
        time.sleep(0.05)
        rest = [pool.submit(batcher.submit, model, images_of(value)) for value in range(1, 9)]
        first.result(timeout=10)
        [future.result(timeout=10) for future in rest]
    assert model.batch_sizes == [1, 8]
