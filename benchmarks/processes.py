"""Start servers on loopback, wait for them to be ready, and watch their memory."""

import os
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


def check_port_free(port):
    """Refuse to start when something already answers on the port: we would measure it instead."""
    with socket.socket() as probe:
        if probe.connect_ex((LOOPBACK, port)) == 0:
            raise SystemExit(f"port {port} on {LOOPBACK} is in use; "
                             "choose another with the port options")


class Server:
    """A server process started by the benchmark, stopped with it."""

    def __init__(self, name, command, port, environment, log_path, ready_path, cwd=None):
        check_port_free(port)
        self.name = name
        self.port = port
        self.ready_url = f"http://{LOOPBACK}:{port}{ready_path}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **environment},
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def url(self, path):
        """The loopback URL of `path` on this server."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    def wait_ready(self, timeout=120):
        """Return the seconds from process start until the ready URL answered 200."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}; "
                                 f"see {self.log_path}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise SystemExit(f"{self.name} was not ready after {timeout} s; see {self.log_path}")

    def stop(self):
        """Ask the server to stop, and kill it if it does not."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def process_tree(pid):
    """`pid` and all of its descendants."""
    tree, index = [pid], 0
    while index < len(tree):
        try:
            for task in os.listdir(f"/proc/{tree[index]}/task"):
                with open(f"/proc/{tree[index]}/task/{task}/children", encoding="ascii") as file:
                    tree.extend(int(child) for child in file.read().split())
        except OSError:
            pass
        index += 1
    return tree


def resident_bytes(pid):
    """VmRSS of one process, or 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pids):
    """User plus system CPU time used so far by the processes `pids`."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid, interval=0.25, busy_share=0.05, timeout=60):
    """Wait until the process tree uses under `busy_share` of a core."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(process_tree(pid))
    while time.monotonic() < deadline:
        time.sleep(interval)
        after = cpu_seconds(process_tree(pid))
        if after - before < busy_share * interval:
            return
        before = after


def machine_cpu_seconds():
    """(busy, total) CPU seconds of the whole machine since boot, summed over its cores."""
    with open("/proc/stat", encoding="ascii") as file:
        values = [int(value) for value in file.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / ticks, sum(values) / ticks


def machine_idle_share(seconds=2.0):
    """The share of all CPU time spent idle over the next `seconds`: how quiet the machine is."""
    busy_before, total_before = machine_cpu_seconds()
    time.sleep(seconds)
    busy_after, total_after = machine_cpu_seconds()
    return 1 - (busy_after - busy_before) / max(total_after - total_before, 1e-9)


class OtherLoad:
    """Measures the CPU share that processes other than the server and our children used."""

    def __init__(self, server_pid=None):
        self.server_pid = server_pid
        self.share = 0.0

    def _counters(self):
        busy, total = machine_cpu_seconds()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = cpu_seconds(process_tree(self.server_pid)) if self.server_pid else 0.0
        return busy, total, server, children.ru_utime + children.ru_stime

    def __enter__(self):
        self._before = self._counters()
        return self

    def __exit__(self, *exc):
        busy, total, server, load_generator = (after - before for after, before
                                               in zip(self._counters(), self._before, strict=True))
        self.share = max(0.0, busy - server - load_generator) / max(total, 1e-9)


class MemoryWatch:
    """Samples the summed RSS of a process tree in the background and keeps the peak."""

    def __init__(self, pid, interval=0.1):
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while True:
            total = sum(resident_bytes(pid) for pid in process_tree(self.pid))
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(self.interval):
                return
