"""The front proxy in the real compose stack: slow clients, limits, request ids, replicas.

The tests run in file order against one compose project (tests/e2e/compose.py): first with
one api replica, then with three, then with none. Every connection goes to 127.0.0.1 on
the published port; replica logs come from `docker logs`.
"""

import json
import re
import select
import socket
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from tests import support
from tests.e2e.compose import running_project, skip_without_compose

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

skip_without_compose()

TEMPLATE = support.ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
# Requests in progress the proxy allows one client address (every test connection comes
# from the same address as far as nginx can tell).
PER_CLIENT_LIMIT = int(re.search(r"limit_conn per_client (\d+);", TEMPLATE.read_text()).group(1))
SLOW_CONNECTIONS = 100
HOLD_SECONDS = 30
TRICKLE_SECONDS = 2
NORMAL_EVERY = 0.5
ANSWER_WITHIN = 1.0
REPLICAS = 3
LOAD_CLIENTS = 16
BOUNDARY = "slow-client-boundary"
# A small JPEG the shipped model can classify.
JPEG = support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], size=32))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The compose stack with its defaults (one api replica), ready to answer."""
    with running_project(tmp_path_factory.mktemp("proxy")) as project:
        project.wait_ready()
        yield project


def fresh_session():
    """A session that ignores proxy settings in the environment: only loopback is contacted."""
    session = requests.Session()
    session.trust_env = False
    return session


def post_image(session, project, request_id=None, timeout=30):
    """POST one JPEG to /predict through the proxy."""
    headers = {"X-Request-ID": request_id} if request_id else {}
    return session.post(project.url("/predict"), files={"file": ("red.jpg", JPEG, "image/jpeg")},
                        headers=headers, timeout=timeout)


def log_entries(project, container=None, service="api"):
    """The JSON lines of one container's log, or of every container of `service`."""
    if container:
        result = project.docker("logs", container)
    else:
        result = project.compose("logs", "--no-color", "--no-log-prefix", service).stdout
    entries = []
    for line in result.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def entries_for(project, service, request_id):
    """The log lines of `service` for `request_id`."""
    return [entry for entry in log_entries(project, service=service)
            if entry.get("request_id") == request_id]


def wait_for_entry(project, service, request_id, timeout=10):
    """The log lines of `service` for `request_id`, waiting for logs to be flushed."""
    return support.poll(lambda: entries_for(project, service, request_id), timeout,
                        lambda: f"no {service} log line for {request_id}{project.logs(service)}",
                        interval=0.5)


class SlowClients:
    """Hold `count` connections that send `opening`, then `trickle` every TRICKLE_SECONDS.

    A connection the server closes, or answers, is opened again at once, as an attacker
    would. Runs in a thread until stop().
    """

    def __init__(self, port, count, opening, trickle):
        self.port, self.count, self.opening, self.trickle = port, count, opening, trickle
        self.sockets = []
        self.reopened = 0
        self.answers = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self):
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        connection.sendall(self.opening)
        connection.setblocking(False)
        return connection

    def open_all(self):
        """Open every connection and send its opening."""
        self.sockets = [self._open() for _ in range(self.count)]
        return self

    def start(self):
        """Open every connection, then keep them trickling in the background."""
        self.open_all()
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(TRICKLE_SECONDS):
            self.refresh()
            for connection in self.sockets:
                try:
                    connection.send(self.trickle)
                except OSError:
                    pass  # closed by the server: the next refresh opens it again

    def refresh(self):
        """Open again every connection the server closed or answered."""
        readable, _, _ = select.select(self.sockets, [], [], 0)
        for connection in readable:
            try:
                answer = connection.recv(65536)
            except OSError:
                answer = b""
            if answer:
                self.answers.append(answer)
            connection.close()
            self.sockets[self.sockets.index(connection)] = self._open()
            self.reopened += 1

    def stop(self):
        """Stop trickling and close every connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for connection in self.sockets:
            connection.close()


def slow_headers(port):
    """Connections that send a request line, then one header byte at a time."""
    return SlowClients(port, SLOW_CONNECTIONS,
                       b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a")


def slow_bodies(port, count=SLOW_CONNECTIONS):
    """Connections that announce a 1 MB multipart upload, then send 20 bytes at a time."""
    headers = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
               f"Content-Length: {1024 * 1024}\r\n\r\n"
               f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"slow.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
    return SlowClients(port, count, headers.encode() + b"\xff\xd8\xff", b"\x00" * 20)


def normal_requests_while_held(project):
    """Post an image every NORMAL_EVERY s for HOLD_SECONDS, each on a new connection.

    Returns (status, seconds) for every request.
    """
    answers = []
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        started = time.monotonic()
        with fresh_session() as session:
            try:
                status = post_image(session, project, timeout=10).status_code
            except requests.RequestException as error:
                status = type(error).__name__
        answers.append((status, round(time.monotonic() - started, 3)))
        time.sleep(max(0.0, NORMAL_EVERY - (time.monotonic() - started)))
    return answers


def service_state(project):
    """What must not change under attack: the api container, its model and an answer."""
    container = project.api_container()
    started_at = project.docker("inspect", "--format", "{{.State.StartedAt}}", container)
    health = project.http.get(project.url("/health"), timeout=10).json()
    prediction = post_image(project.http, project).json()
    return container, started_at, health, prediction


def assert_served_while_held(project):
    """Every normal request answers 200 within ANSWER_WITHIN s for HOLD_SECONDS."""
    answers = normal_requests_while_held(project)
    late = [answer for answer in answers if answer[0] != 200 or answer[1] > ANSWER_WITHIN]
    assert len(answers) >= HOLD_SECONDS / NORMAL_EVERY / 2, answers
    assert not late, f"{len(late)} of {len(answers)} late or failed: {late[:10]}{project.logs()}"


def test_slow_headers_do_not_starve_normal_requests(stack):
    before = service_state(stack)
    attack = slow_headers(int(stack.environment["API_PORT"])).start()
    try:
        assert_served_while_held(stack)
        attack.refresh()
    finally:
        attack.stop()
    # nginx cut each one off once its headers were late (client_header_timeout), answering nothing.
    assert attack.reopened >= SLOW_CONNECTIONS
    assert attack.answers == []
    assert service_state(stack) == before


def test_slow_bodies_do_not_starve_normal_requests_and_a_greedy_client_gets_429(stack):
    before = service_state(stack)
    port = int(stack.environment["API_PORT"])
    attack = slow_bodies(port).start()
    extra = slow_bodies(port, count=PER_CLIENT_LIMIT - SLOW_CONNECTIONS + 12)
    try:
        assert_served_while_held(stack)
        # nginx waited for every body, however slow, without giving any up.
        attack.refresh()
        assert attack.reopened == 0 and attack.answers == []
        # Past the per-client limit, requests are refused at once, in JSON.
        extra.open_all()
        time.sleep(2)
        extra.refresh()
    finally:
        attack.stop()
        extra.stop()
    assert len(extra.answers) >= 12, extra.answers
    for answer in extra.answers:
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 429 "), answer
        assert b"application/json" in head
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    assert service_state(stack) == before


def test_a_body_over_the_limit_gets_the_proxys_json_413(stack):
    request_id = f"too-large-{uuid.uuid4().hex[:12]}"
    response = stack.http.post(stack.url("/predict"), data=b"\0" * (30 * 1024 * 1024),
                               headers={"Content-Type": "image/jpeg", "X-Request-ID": request_id},
                               timeout=60)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.headers["X-Request-ID"] == request_id
    # The proxy refused it; the api never saw it.
    assert wait_for_entry(stack, "proxy", request_id)[0]["status"] == 413
    # The proxy's line is written, so the api's would be too, had the request reached it.
    assert entries_for(stack, "api", request_id) == []


def test_a_request_id_passes_through_to_the_api_log_with_the_real_client(stack):
    request_id = f"proxy-test-{uuid.uuid4().hex[:12]}"
    response = post_image(stack.http, stack, request_id=request_id)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id

    [api_line] = wait_for_entry(stack, "api", request_id)
    [proxy_line] = wait_for_entry(stack, "proxy", request_id)
    assert api_line["status"] == proxy_line["status"] == 200
    # The api logs the address nginx saw, not nginx's own address on the project network.
    proxy_container = stack.compose("ps", "--quiet", "proxy").stdout.strip()
    proxy_address = stack.docker("inspect", "--format",
                                 "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                 proxy_container)
    assert api_line["client"] == proxy_line["client"] != proxy_address


def test_the_proxy_does_not_run_as_root(stack):
    status = stack.compose("exec", "-T", "proxy", "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert "0" not in uid_line.split()[1:], uid_line


def test_metrics_are_open_through_the_proxy_by_default(stack):
    response = stack.http.get(stack.url("/metrics"), timeout=10)
    assert response.status_code == 200
    assert "http_requests_total" in response.text


def test_nginx_makes_a_request_id_when_none_or_a_bad_one_is_sent(stack):
    for sent in (None, "no spaces <here>"):
        response = post_image(stack.http, stack, request_id=sent)
        request_id = response.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        assert len(wait_for_entry(stack, "api", request_id)) == 1


class Load:
    """LOAD_CLIENTS kept-alive clients posting images until stop(); every answer is kept."""

    def __init__(self, project, prefix):
        self.project, self.prefix = project, prefix
        self.answers = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(index,), daemon=True)
                         for index in range(LOAD_CLIENTS)]

    def _client(self, index):
        with fresh_session() as session:
            sent = 0
            while not self._stop.is_set() and sent < 5000:
                sent += 1
                try:
                    response = post_image(session, self.project,
                                          request_id=f"{self.prefix}-{index}-{sent}")
                    outcome = response.status_code
                except requests.RequestException as error:
                    outcome = repr(error)
                self.answers.append((time.monotonic(), outcome))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failures(self):
        """Every answer that was not a 200."""
        return [answer for answer in self.answers if answer[1] != 200]


def healthy_replicas(project, count, timeout=120):
    """Wait until `count` api containers are running and healthy; return their ids."""
    states = []

    def all_healthy():
        containers = project.compose("ps", "--quiet", "api").stdout.split()
        states[:] = [project.docker("inspect", "--format", "{{.State.Health.Status}}", container)
                     for container in containers]
        return containers if len(containers) == count and set(states) == {"healthy"} else None

    return support.poll(all_healthy, timeout, lambda: f"replicas: {states}{project.logs()}",
                        interval=1)


def test_scaled_replicas_each_answer_a_share(stack):
    stack.compose("up", "--detach", "--no-build", "--scale", f"api={REPLICAS}", timeout=240)
    replicas = healthy_replicas(stack, REPLICAS)
    prefix = f"share-{uuid.uuid4().hex[:8]}"
    with Load(stack, prefix) as load:
        time.sleep(8)
    assert load.failures() == []
    served = Counter()
    for replica in replicas:
        served[replica] = sum(1 for entry in log_entries(stack, container=replica)
                              if str(entry.get("request_id", "")).startswith(prefix))
    total = sum(served.values())
    assert total == len(load.answers), (total, len(load.answers))
    # Each replica gets a share: requests go to the addresses in a random order.
    assert min(served.values()) >= total / REPLICAS / 3, served


def test_no_request_fails_when_one_replica_is_killed_and_another_stopped(stack):
    replicas = healthy_replicas(stack, REPLICAS)
    with Load(stack, f"churn-{uuid.uuid4().hex[:8]}") as load:
        time.sleep(4)
        stack.docker("kill", replicas[0])
        killed_at = time.monotonic()
        time.sleep(6)
        # SIGTERM: gunicorn finishes what it has, then exits; `docker stop` waits for it.
        stack.docker("stop", replicas[1])
        time.sleep(3)
    # Every request that no replica had started to answer is retried on another. What no
    # proxy can save is an answer already under way when SIGKILL lands: gunicorn writes an
    # answer's headers and its body separately, and once nginx has relayed the headers it
    # can only cut the connection. So the only failures allowed are answers cut off at the
    # moment of the kill, at most one per client; after SIGTERM, none at all.
    cut_at_kill = [(answered, outcome) for answered, outcome in load.failures()
                   if "IncompleteRead" in outcome and abs(answered - killed_at) < 2]
    assert load.failures() == cut_at_kill, load.failures()[:10]
    assert len(cut_at_kill) <= LOAD_CLIENTS
    assert sum(1 for answered, _ in load.answers if answered > killed_at) > 100
    assert stack.compose("ps", "--quiet", "api").stdout.split() == [replicas[2]]


def test_with_no_replica_left_the_proxy_answers_json_502(stack):
    stack.compose("stop", "api", timeout=120)
    # Once nginx's cached DNS answer expires (2 s), `api` no longer resolves.
    deadline = time.monotonic() + 15
    while True:
        response = stack.http.get(stack.url("/health"), timeout=10)
        if response.status_code == 502 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 502, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "api_unavailable"


def test_metrics_can_be_closed_to_other_addresses(stack):
    stack.environment["METRICS_ALLOW"] = "192.0.2.1"
    stack.compose("up", "--detach", "--no-build", "--no-deps", "proxy", timeout=120)
    deadline = time.monotonic() + 30
    while True:
        try:
            response = stack.http.get(stack.url("/metrics"), timeout=5)
            if response.status_code == 403:
                break
        except requests.ConnectionError:
            pass  # the new proxy container is starting
        assert time.monotonic() < deadline, "the proxy never refused /metrics"
        time.sleep(0.5)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "forbidden"
