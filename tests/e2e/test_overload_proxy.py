"""Overload, deadlines and per-key quotas through the compose proxy (tests/e2e/compose.py).

Two stacks, one per test group: one with API keys and a small per-key quota at the proxy,
one with a small waiting bound in the api, so that both kinds of refusal can be reached
with a few dozen requests.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests import support
from tests.e2e.compose import MODEL_NAME, running_project, skip_without_compose
from tests.e2e.test_proxy import JPEG, fresh_session, log_entries

KEY = "overload-test-key"
# The per-key burst the quota stack allows, and the clients that overload the small stack.
BURST, CLIENTS = 3, 48

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

skip_without_compose()


def post_image(project, headers=None, session=None):
    """POST one JPEG to /predict through the proxy."""
    session = session or fresh_session()
    return session.post(project.url("/predict"), data=JPEG, timeout=30,
                        headers={"Content-Type": "image/jpeg", **(headers or {})})


@pytest.fixture(scope="module")
def quota_stack(tmp_path_factory):
    """API keys on, and a quota of 1 request a second with a burst of BURST per key."""
    with running_project(tmp_path_factory.mktemp("quota"), API_KEY=KEY, PROXY_KEY_QUOTA="on",
                         PROXY_KEY_RATE="1r/s", PROXY_KEY_BURST=str(BURST)) as project:
        support.poll(lambda: fresh_session().get(project.url("/health/ready"),
                                                 timeout=5).status_code == 200, 120,
                     lambda: project.logs())
        yield project


def test_a_key_over_its_quota_gets_429_whichever_header_or_face_carries_it(quota_stack):
    session = fresh_session()
    forms = [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}]
    answers = [post_image(quota_stack, forms[index % 2], session) for index in range(BURST + 4)]
    statuses = [response.status_code for response in answers]
    # One quota for both headers: the burst and about one more, then refusals.
    assert statuses[:BURST] == [200] * BURST and statuses.count(429) >= 2, statuses
    refused = next(response for response in answers if response.status_code == 429)
    support.assert_error(refused, 429, "quota_exceeded")
    assert refused.headers["Retry-After"] == "1"
    # The same key over gRPC counts toward the same quota.
    client = triton.InferenceServerClient(quota_stack.grpc_target)
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([JPEG], dtype=np.object_))
    try:
        with pytest.raises(InferenceServerException) as grpc_refused:
            client.infer(MODEL_NAME, [tensor], headers={"x-api-key": KEY}, client_timeout=30)
    finally:
        client.close()
    assert grpc_refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "quota" in grpc_refused.value.message()
    # Another key has its own quota (this one is not valid: the api's 401, not the proxy's).
    support.assert_error(post_image(quota_stack, {"X-API-Key": "another"}), 401, "unauthorized")
    # A new made-up Bearer token each time, beside the valid X-API-Key, does not escape the
    # quota: requests with both headers count under each.
    varied = [post_image(quota_stack, {"Authorization": f"Bearer made-up-{index}",
                                       "X-API-Key": KEY}, session).status_code
              for index in range(BURST + 4)]
    assert varied.count(429) >= 2, varied


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    """An api that lets one request wait for its two threads per worker."""
    with running_project(tmp_path_factory.mktemp("overload"), THREADS="2",
                         MAX_WAITING_REQUESTS="1", GRPC_ENABLED="0") as project:
        project.wait_ready()
        yield project


def test_overload_is_a_503_the_proxy_does_not_send_to_another_replica(small_stack):
    def attempt(index):
        return post_image(small_stack, {"X-Request-ID": f"overload-{index}"})

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(attempt, range(CLIENTS)))
        live = fresh_session().get(small_stack.url("/health/live"), timeout=10)
    statuses = [response.status_code for response in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    refused = next(response for response in answers if response.status_code == 503)
    support.assert_error(refused, 503, "overloaded")
    assert refused.headers["Retry-After"] == "1"
    assert live.status_code == 200
    # Each request reached the api once: nginx did not send an overload 503 on.
    proxy_lines = [entry for entry in log_entries(small_stack, service="proxy")
                   if str(entry.get("request_id", "")).startswith("overload-")]
    assert len(proxy_lines) == CLIENTS
    assert all("," not in entry["upstream_status"] for entry in proxy_lines), proxy_lines


def test_a_deadline_passes_through_the_proxy_and_counts_from_its_arrival(small_stack):
    support.assert_error(post_image(small_stack, {"X-Request-Timeout": "0"}), 504,
                         "deadline_exceeded")
    support.assert_error(post_image(small_stack, {"X-Request-Timeout": "-3"}), 400,
                         "invalid_deadline")
    assert post_image(small_stack, {"X-Request-Timeout": "5000"}).status_code == 200
    metrics = fresh_session().get(small_stack.url("/metrics"), timeout=10).text
    assert 'requests_refused_total{reason="deadline_exceeded"}' in metrics
    assert 'requests_refused_total{reason="overloaded"}' in metrics
