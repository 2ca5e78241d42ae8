"""Drive a server with wrk and read back its figures."""

import json
import os
import shutil
import subprocess

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "post_images.lua")
RESULT_MARK = "WRK_RESULT "
INSTALL_HINT = "wrk is not installed: on Debian or Ubuntu run `apt-get install -y wrk`."


def require_wrk():
    """Return wrk's path, or stop with how to install it."""
    path = shutil.which("wrk")
    if not path:
        raise SystemExit(INSTALL_HINT)
    return path


class LoadError(Exception):
    """A load run had failed requests: its figures would not mean anything."""


def run_wrk(url, image_list, clients, seconds, max_requests, timeout_seconds, warmup=False,
            form="multipart"):
    """POST images to `url` from `clients` connections; return wrk's figures as a dict.

    `form` is "multipart" (/predict) or "v2" (an Open Inference Protocol binary BYTES input).

    A warm-up may end before any answer arrives (a cold peer is slow); a measured run may not.
    """
    command = [require_wrk(), "--threads", "1", "--connections", str(clients),
               "--duration", f"{seconds}s", "--timeout", f"{timeout_seconds}s",
               "--script", SCRIPT, url, "--", image_list, str(max_requests), form]
    finished = subprocess.run(command, capture_output=True, text=True,
                              timeout=seconds + timeout_seconds + 30)
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if finished.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({finished.returncode}): {finished.stderr or finished.stdout}")
    result = json.loads(lines[-1][len(RESULT_MARK):])
    failures = {key: result[key] for key in ("not_200", "connect_errors", "read_errors",
                                             "write_errors", "status_errors", "timeouts")
                if result[key]}
    if failures or not (result["requests"] or warmup):
        raise LoadError(f"{url} at {clients} clients: not every request answered 200: {failures} "
                        f"(first bad status {result['first_bad_status']}, "
                        f"{result['requests']} requests)")
    seconds_run = max(result["duration_us"], 1) / 1e6
    return {"clients": clients, "requests": result["requests"],
            "requests_per_second": result["requests"] / seconds_run,
            "p50_ms": result["p50_us"] / 1000, "p90_ms": result["p90_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000, "max_ms": result["max_us"] / 1000}
