"""The canary split and shadow copies: the share, its stickiness, and what shadows count."""

import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY

from service.models.policy import Canary
from service.models.routing import RoutingTable, Splitter
from service.models.shadow import ShadowRunner
from tests.unit.fakes import ColourModel


def table(percent, mode="split"):
    versions = {2: ColourModel(version=2), 3: ColourModel(version=3)}
    return RoutingTable("colours", versions, {"stable": 2, "canary": 3}, Canary(percent, mode))


@pytest.mark.parametrize("percent", [0, 1, 10, 33.3, 50, 90, 100])
def test_unkeyed_requests_split_within_a_request_of_the_share(percent):
    splitter, routes = Splitter(), table(percent)
    chosen = [routes.route(splitter) for _ in range(1000)]
    canary = sum(route.model.version == 3 for route in chosen)
    assert abs(canary - percent * 10) <= 1
    assert all(route.split for route in chosen)
    assert {route.label for route in chosen if route.model.version == 3} <= {"canary"}


def test_a_routing_key_always_lands_on_the_same_side_in_any_worker():
    routes = table(10)
    first, second = Splitter(), Splitter()
    keys = [f"user-{index}" for index in range(2000)]
    sides = [routes.route(first, routing_key=key).label for key in keys]
    assert sides == [routes.route(second, routing_key=key).label for key in keys]
    assert sides == [routes.route(first, routing_key=key).label for key in keys]
    # Hashed keys split near the share, and a user in the canary at 10% stays in it at 20%.
    assert 0.08 <= sides.count("canary") / len(keys) <= 0.12
    wider = table(20)
    assert all(wider.route(first, routing_key=key).label == "canary"
               for key, side in zip(keys, sides, strict=True) if side == "canary")


def test_shadow_mode_answers_with_stable_and_copies_the_share_to_the_canary():
    splitter, routes = Splitter(), table(25, "shadow")
    chosen = [routes.route(splitter) for _ in range(400)]
    assert {route.model.version for route in chosen} == {2}
    assert sum(route.shadow is not None for route in chosen) == 100
    assert {route.shadow.version for route in chosen if route.shadow} == {3}


def test_named_versions_and_labels_are_not_split():
    splitter, routes = Splitter(), table(100)
    assert routes.route(splitter, version="2").model.version == 2
    assert routes.route(splitter, version="2").label is None
    assert routes.route(splitter, label="stable").model.version == 2
    assert not routes.route(splitter, label="stable").split


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_shadow_copies_count_agreement_and_latency_and_never_block():
    taken, release = threading.Event(), threading.Event()

    def run(model, images):
        taken.set()
        release.wait(10)
        return model.infer(images)

    shadows = ShadowRunner(run, queue_length=2)
    route = table(100, "shadow").route(Splitter())
    stable = route.model
    # Red pictures: stable answers red; a shadow that answers the same agrees on each image.
    images = np.zeros((3, 16, 16, 3), np.uint8)
    images[..., 0] = 200
    answered = stable.infer(images)
    labels = {"model": "colours", "version": "3", "stable_version": "2"}
    before = sample("shadow_images_total", **labels, agreement="agree")
    skipped = sample("shadow_requests_skipped_total", model="colours", version="3",
                     reason="queue_full")
    # The first copy is taken by the thread and held; two more fill the queue; the rest drop.
    offers = [shadows.offer(route, images, answered)]
    assert taken.wait(10)
    offers += [shadows.offer(route, images, answered) for _ in range(5)]
    assert offers == [True, True, True, False, False, False]
    dropped = offers.count(False)
    assert sample("shadow_requests_skipped_total", model="colours", version="3",
                  reason="queue_full") == skipped + dropped
    release.set()
    classified = offers.count(True)
    deadline_images = before + 3 * classified
    for _ in range(200):
        if sample("shadow_images_total", **labels, agreement="agree") >= deadline_images:
            break
        threading.Event().wait(0.02)
    assert sample("shadow_images_total", **labels, agreement="agree") == deadline_images
    assert sample("shadow_images_total", **labels, agreement="disagree") == 0
    assert sample("shadow_request_duration_seconds_count", model="colours",
                  version="3") >= classified


def test_a_shadow_that_disagrees_or_fails_is_counted_so():
    class Contrary(ColourModel):
        def infer(self, images, all_cores=False):
            return super().infer(images)[:, ::-1]  # swaps blue and red

    stable, shadow = ColourModel(version=4), Contrary(version=5)
    routes = RoutingTable("contrary", {4: stable, 5: shadow}, {"stable": 4, "canary": 5},
                          Canary(100, "shadow"))
    route = routes.route(Splitter())
    images = np.zeros((2, 16, 16, 3), np.uint8)
    images[..., 2] = 250  # blue
    done = threading.Event()

    def run(model, batch):
        try:
            return model.infer(batch)
        finally:
            done.set()

    ShadowRunner(run).offer(route, images, stable.infer(images))
    assert done.wait(5)
    labels = {"model": "contrary", "version": "5", "stable_version": "4"}
    for _ in range(100):
        if sample("shadow_images_total", **labels, agreement="disagree") == 2:
            break
        threading.Event().wait(0.02)
    assert sample("shadow_images_total", **labels, agreement="disagree") == 2

    failed = threading.Event()

    def broken(model, batch):
        failed.set()
        raise RuntimeError("the shadow broke")

    ShadowRunner(broken).offer(route, images, stable.infer(images))
    assert failed.wait(5)
    for _ in range(100):
        if sample("shadow_requests_skipped_total", model="contrary", version="5",
                  reason="failed") == 1:
            break
        threading.Event().wait(0.02)
    assert sample("shadow_requests_skipped_total", model="contrary", version="5",
                  reason="failed") == 1
