"""The compose stack hardened: HTTPS at the proxy, API keys as a Docker secret, least privilege.

One compose project with both overrides (deploy/tls/compose.tls.yml and
deploy/secrets/compose.secrets.yml), a certificate from deploy/tls/make-self-signed.sh,
and debug logs; the tests run in file order against it. Plain HTTP's refusal mode runs in a
lone nginx container with the same templates.
"""

import json
import os
import re
import socket
import ssl
import subprocess
import time
import uuid

import pytest
import requests

from service.api_keys import RELOAD_SECONDS
from tests import support
from tests.e2e.compose import IMAGE_USER, running_project, skip_without_compose

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

skip_without_compose()

TLS_OVERRIDE = "deploy/tls/compose.tls.yml"
SECRETS_OVERRIDE = "deploy/secrets/compose.secrets.yml"
TEMPLATES = support.ROOT / "deploy" / "nginx" / "templates"
KEY_A = uuid.uuid4().hex + "-a"
KEY_B = uuid.uuid4().hex + "-b"
MAX_REQUEST_BYTES = 300_000
JPEG = support.encode(support.draw_picture(support.SHAPE_COLOURS["green"], size=32))
# AEAD suites only; on TLS 1.2 with an ephemeral (forward-secret) key exchange too.
MODERN = re.compile(r"^(TLS_(AES_\d+_GCM|CHACHA20_POLY1305)_SHA\d+|ECDHE-(ECDSA|RSA)-"
                    r"(AES\d+-GCM|CHACHA20-POLY1305)(-SHA\d+)?)$")


def make_certificate(folder):
    """deploy/tls/make-self-signed.sh's pair for localhost and 127.0.0.1, in `folder`."""
    subprocess.run([str(support.ROOT / "deploy" / "tls" / "make-self-signed.sh"), str(folder)],
                   check=True, capture_output=True, timeout=60)
    return folder / "cert.pem", folder / "key.pem"


def write_keys(path, text):
    """Rewrite the secret's file in place: a single-file mount follows the inode."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    """The stack with HTTPS and a Docker secret of API keys, ready to answer."""
    base = tmp_path_factory.mktemp("hardened")
    cert, key = make_certificate(base / "tls")
    keys = base / "api-keys"
    keys.write_text(f"# the test's key\n{KEY_A}\n")
    keys.chmod(0o600)
    if os.geteuid() == 0:
        # The api runs as the image's user (tests/e2e/compose.py), which must read the secret.
        os.chown(keys, *IMAGE_USER)
    compose_files = os.environ.get("COMPOSE_FILE", "docker-compose.yml")
    settings = {"COMPOSE_FILE": f"{compose_files}:{TLS_OVERRIDE}:{SECRETS_OVERRIDE}",
                "TLS_PORT": str(support.free_port()), "TLS_CERT": str(cert),
                "TLS_KEY": str(key), "API_KEYS_SECRET_FILE": str(keys),
                "LOG_LEVEL": "debug", "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
    with running_project(base, **settings) as project:
        # From here on the project's own requests go over HTTPS, trusting only this
        # certificate; plain_url is the published plain-HTTP port.
        project.plain_url, project.https_url = project.base_url, (
            f"https://127.0.0.1:{settings['TLS_PORT']}")
        project.base_url = project.https_url
        project.http.verify = str(cert)
        project.cert, project.keys = cert, keys
        project.wait_ready()
        yield project


def https(project, method, path, key=None, headers=None, **options):
    """A request over HTTPS (with `key` as a Bearer token) that trusts only the test's
    certificate."""
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    return project.http.request(method, project.url(path), headers=headers, timeout=30,
                                **options)


def handshake(project, context):
    """Connect to the HTTPS port as localhost; (version, cipher, certificate DER) or SSLError."""
    port = int(project.https_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version(), tls.cipher()[0], tls.getpeercert(binary_form=True)


def client_context(project, minimum=None, maximum=None, ciphers=None):
    """A client that verifies the server against the test's certificate and name."""
    context = ssl.create_default_context(cafile=str(project.cert))
    if ciphers:
        # Level 0 lets this client offer what a modern server must refuse.
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    if minimum:
        context.minimum_version = minimum
    if maximum:
        context.maximum_version = maximum
    return context


def test_https_serves_the_certificate_and_only_it(hardened):
    version, cipher, certificate = handshake(hardened, client_context(hardened))
    assert version == "TLSv1.3" and MODERN.match(cipher), (version, cipher)
    assert certificate == ssl.PEM_cert_to_DER_cert(hardened.cert.read_text())
    # The whole chain the server sends, as openssl sees it: the one self-signed certificate,
    # verified against itself for the name localhost.
    port = hardened.https_url.rsplit(":", 1)[1]
    shown = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-servername", "localhost", "-verify_hostname", "localhost",
                            "-CAfile", str(hardened.cert), "-showcerts"],
                           input="", capture_output=True, text=True, timeout=30).stdout
    sent = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", shown, re.S)
    assert [ssl.PEM_cert_to_DER_cert(pem) for pem in sent] == [certificate], shown
    assert "Verify return code: 0 (ok)" in shown, shown


def test_tls_1_2_takes_only_forward_secret_aead_suites(hardened):
    context = client_context(hardened, maximum=ssl.TLSVersion.TLSv1_2)
    version, cipher, _ = handshake(hardened, context)
    assert version == "TLSv1.2" and MODERN.match(cipher), cipher
    for weak in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"):
        with pytest.raises(ssl.SSLError):
            handshake(hardened, client_context(hardened, maximum=ssl.TLSVersion.TLSv1_2,
                                               ciphers=weak))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_before_1_2_is_refused(hardened, version):
    context = client_context(hardened, minimum=version, maximum=version, ciphers="ALL")
    with pytest.raises(ssl.SSLError):
        handshake(hardened, context)


def test_plain_http_is_redirected_to_the_same_url_over_https(hardened):
    for method in ("GET", "POST"):
        response = hardened.http.request(method, hardened.plain_url + "/predict?top_k=1",
                                         allow_redirects=False, timeout=10)
        assert response.status_code == 308, response.text
        assert response.headers["Location"] == f"{hardened.https_url}/predict?top_k=1"
        assert "Strict-Transport-Security" not in response.headers
    # The proxy is healthy all the same: its check asks over loopback inside the container.
    container = hardened.compose("ps", "--quiet", "proxy").stdout.strip()
    support.poll(lambda: hardened.docker("inspect", "--format", "{{.State.Health.Status}}",
                                         container) == "healthy", 60, "proxy not healthy",
                 interval=1)


def test_https_answers_carry_hsts_and_the_security_headers_and_no_version(hardened):
    page = https(hardened, "GET", "/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    too_large = https(hardened, "POST", "/predict", key=KEY_A,
                      data=b"x" * (MAX_REQUEST_BYTES + 1),
                      headers={"Content-Type": "image/jpeg"})
    support.assert_error(too_large, 413, "request_too_large")  # nginx's own answer
    for response in (page, too_large, https(hardened, "GET", "/health")):
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        # Each once: nginx drops the api's copies and sends its own.
        assert len(response.raw.headers.getlist("X-Content-Type-Options")) == 1
        assert response.headers["Server"] == "nginx"
        assert not re.search(r"nginx/|gunicorn", response.text)


def test_the_api_key_comes_from_the_docker_secret_and_nowhere_else(hardened):
    support.assert_error(https(hardened, "POST", "/predict", data=JPEG,
                               headers={"Content-Type": "image/jpeg"}), 401, "unauthorized")
    answer = https(hardened, "POST", "/predict", key=KEY_A, data=JPEG,
                   headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200, answer.text
    container = hardened.api_container()
    inspected = hardened.docker("inspect", container)
    assert KEY_A not in inspected
    environment = json.loads(inspected)[0]["Config"]["Env"]
    assert "API_KEY_FILE=/run/secrets/api_keys" in environment
    assert "API_KEY=" in environment  # empty: no key in the environment


def test_a_key_is_rotated_by_editing_the_secret(hardened):
    def accepted(key):
        return https(hardened, "POST", "/predict", key=key, data=JPEG,
                     headers={"Content-Type": "image/jpeg"}).status_code == 200

    write_keys(hardened.keys, f"{KEY_A}\n{KEY_B}  # the new one\n")
    # Every worker within a reload interval; several requests reach both workers.
    support.poll(lambda: all(accepted(KEY_B) for _ in range(6)), RELOAD_SECONDS + 5,
                 "the added key was not accepted", interval=0.2)
    assert accepted(KEY_A)
    write_keys(hardened.keys, f"{KEY_B}\n")
    support.poll(lambda: not any(accepted(KEY_A) for _ in range(6)), RELOAD_SECONDS + 5,
                 "the removed key was still accepted", interval=0.2)
    assert accepted(KEY_B)


def test_grpc_is_served_over_tls_with_the_same_certificate_and_keys(hardened):
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(hardened.grpc_target, ssl=True,
                                          root_certificates=str(hardened.cert))
    assert client.is_server_live()
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([JPEG], dtype=np.object_))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("cifar10", [image])
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    result = client.infer("cifar10", [image], headers={"x-api-key": KEY_B})
    assert result.as_numpy("probabilities").shape == (1, 10)
    # Plain h2c is not spoken on the TLS port: the key never crosses in the clear.
    with pytest.raises(InferenceServerException):
        triton.InferenceServerClient(hardened.grpc_target).is_server_live()


def test_no_key_is_in_any_log(hardened):
    https(hardened, "GET", "/model", key=KEY_B)
    https(hardened, "POST", "/predict", key=KEY_A[:-1], data=JPEG,
          headers={"Content-Type": "image/jpeg"})
    time.sleep(1)
    logs = hardened.compose("logs", "--no-color", "api", "proxy").stdout
    assert "api_keys_reloaded" in logs and '"level": "DEBUG"' in logs
    for key in (KEY_A, KEY_B, KEY_A[:-1]):
        assert key not in logs
    assert KEY_B not in https(hardened, "GET", "/model").text
    assert KEY_B not in https(hardened, "GET", "/metrics").text


def capabilities_and_privileges(status):
    """{field: value} of the Cap* and NoNewPrivs lines of a /proc/<pid>/status."""
    return dict(re.findall(r"^(Cap\w+|NoNewPrivs):\s+(\S+)$", status, re.MULTILINE))


NONE = {"CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16, "CapBnd": "0" * 16,
        "CapAmb": "0" * 16, "NoNewPrivs": "1"}


@pytest.mark.parametrize("service", ["api", "proxy"])
def test_services_hold_no_capability_and_cannot_gain_privileges(hardened, service):
    container = hardened.compose("ps", "--quiet", service).stdout.strip()
    (config,) = json.loads(hardened.docker("inspect", container))
    host = config["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], host["CapDrop"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"], "no memory limit"
    assert host["PidsLimit"] > 0, "no process limit"
    # What the kernel says of every process in the container, the main one first.
    pids = hardened.compose("exec", "-T", service, "sh", "-c",
                            "ls /proc | grep -E '^[0-9]+$'").stdout.split()
    for pid in pids:
        status = hardened.compose("exec", "-T", service, "cat", f"/proc/{pid}/status",
                                  check=False).stdout
        if status:
            assert capabilities_and_privileges(status) == NONE, (service, pid, status)


@pytest.mark.parametrize("service", ["trainer", "release"])
def test_the_one_off_services_hold_no_capability_and_their_roots_are_read_only(hardened,
                                                                             service):
    result = hardened.compose("--profile", "train", "--profile", "release", "run", "--rm", "-T",
                              "--entrypoint", "sh", service, "-c",
                              "cat /proc/self/status; touch /probe 2>&1 || echo read-only; "
                              "touch /tmp/probe && echo tmp-writable", timeout=180)
    assert capabilities_and_privileges(result.stdout) == NONE, result.stdout
    assert "read-only" in result.stdout and "tmp-writable" in result.stdout


def test_plain_http_can_be_refused_instead(tmp_path):
    # The same templates in a lone nginx container, PLAIN_HTTP=refuse: plain HTTP answers
    # a JSON 403 naming the HTTPS port, before any api is needed.
    cert, key = make_certificate(tmp_path / "tls")
    name = f"classifier-tls-test-{uuid.uuid4().hex[:8]}"
    port = support.free_port()
    docker = ["docker", "run", "--detach", "--name", name, "--network", name, "--user", "101:101",
              "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
              "--tmpfs", "/etc/nginx/conf.d:uid=101,gid=101", "--tmpfs",
              "/var/cache/nginx:uid=101,gid=101", "--tmpfs", "/var/run:uid=101,gid=101",
              "--publish", f"127.0.0.1:{port}:8000",
              "--mount", f"type=bind,src={TEMPLATES},dst=/etc/nginx/templates,readonly",
              "--mount", f"type=bind,src={cert},dst=/etc/nginx/tls/cert.pem,readonly",
              "--mount", f"type=bind,src={key},dst=/etc/nginx/tls/key.pem,readonly",
              "--env", "MAX_REQUEST_BYTES=1000", "--env", "METRICS_ALLOW=all",
              "--env", "PROXY_TLS=on", "--env", "TLS_PORT=9443", "--env", "PLAIN_HTTP=refuse",
              "--env", "HSTS_MAX_AGE=0", "--env", "PROXY_KEY_QUOTA=off",
              "--env", "PROXY_KEY_RATE=10r/s", "--env", "PROXY_KEY_BURST=20",
              "--env", "PROXY_KEY_RETRY_AFTER=1", "nginx:1.30-alpine"]
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    try:
        subprocess.run(docker, check=True, capture_output=True, timeout=60)
        session = requests.Session()
        session.trust_env = False
        # A tuple, as a 4xx Response counts as false.
        (response,) = support.poll(lambda: (session.post(f"http://127.0.0.1:{port}/predict",
                                                         data=b"key", timeout=3),),
                                   30, lambda: subprocess.run(["docker", "logs", name],
                                                              capture_output=True,
                                                              text=True).stderr)
        support.assert_error(response, 403, "https_required")
        assert "port 9443" in response.json()["error"]["message"]
        assert "Location" not in response.headers
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)
        subprocess.run(["docker", "network", "rm", name], capture_output=True)
