"""A throwaway PostgreSQL server for tests: a new cluster in a temporary folder, on loopback.

Debian's `postgresql` package gives the binaries (.ci/run installs it). As root, the server
runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def server_binaries() -> str | None:
    """The folder of initdb and pg_ctl, newest major version first; None without them."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    return None


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One cluster: started in `folder`, its URL, stopped and removed at the end."""

    def __init__(self, folder: str):
        binaries = server_binaries()
        if binaries is None:
            pytest.skip("no PostgreSQL server binaries (apt-get install -y postgresql)")
        self.folder, self.port = folder, free_port()
        self.initdb, self.pg_ctl = (os.path.join(binaries, name) for name in ("initdb", "pg_ctl"))
        self.as_user = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(folder, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(folder, "data")
        self.url = f"postgresql://tester@127.0.0.1:{self.port}/postgres"

    def _run(self, *command) -> None:
        subprocess.run([*self.as_user, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgresServer":
        """initdb, then start on loopback with fsync off (a test cluster needs no durability)."""
        self._run(self.initdb, "-D", self.data, "-U", "tester", "--auth=trust", "-E", "UTF8")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c fsync=off "
                   f"-c unix_socket_directories={self.folder}")
        self._run(self.pg_ctl, "-D", self.data, "-o", options, "-l",
                  os.path.join(self.folder, "server.log"), "-w", "start")
        return self

    def stop(self) -> None:
        """Stop at once (in-flight sessions are cut off)."""
        subprocess.run([*self.as_user, self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)

    def wait_down(self) -> None:
        """Until the port no longer answers."""
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)):
                    return
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole session; skips, saying why, without the binaries."""
    # Not under pytest's own temporary folder: that is private to root, and the server may
    # run as the postgres user.
    folder = tempfile.mkdtemp(prefix="postgres-test-")
    server = PostgresServer(folder).start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)
