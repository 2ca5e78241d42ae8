"""Start to first answer: from `docker compose start api` to the first 200 from /predict.

The compose api runs alone, its port published on loopback (benchmarks/compose-direct.yml).
Each round stops it, then times `docker compose start api` and a JPEG posted to /predict
every 20 ms until one is answered 200: the wait a user has after a restart, image and
container already in place (a first `docker compose up` also builds or pulls).

    python -m benchmarks.start_time --rounds 5
"""

import argparse
import statistics
import time

import requests

from benchmarks.proxy_overhead import compose, direct_environment
from tests.support import draw_picture, encode

POLL_SECONDS = 0.02


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.start_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--project", default="start-time")
    parser.add_argument("--http-port", type=int, default=18470)
    parser.add_argument("--grpc-port", type=int, default=18471)
    return parser.parse_args(argv)


def first_answer_seconds(environment, url, image):
    """Seconds from `docker compose start api` to the first 200 from /predict."""
    started = time.monotonic()
    compose(environment, "start", "api")
    while time.monotonic() - started < 120:
        try:
            if requests.post(url, data=image, headers={"Content-Type": "image/jpeg"},
                             timeout=5).status_code == 200:
                return time.monotonic() - started
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(POLL_SECONDS)
    raise SystemExit("the api did not answer /predict within 120 s")


def main(argv=None):
    args = parse_args(argv)
    environment = direct_environment(args.project, BENCH_API_PORT=str(args.http_port),
                                     BENCH_API_GRPC_PORT=str(args.grpc_port))
    url = f"http://127.0.0.1:{args.http_port}/predict"
    image = encode(draw_picture((200, 40, 40), size=32))
    compose(environment, "up", "--detach", "--build", "--wait", "api")
    times = []
    try:
        for round_number in range(args.rounds):
            compose(environment, "stop", "api")
            times.append(first_answer_seconds(environment, url, image))
            print(f"round {round_number + 1}: {times[-1]:.2f} s", flush=True)
    finally:
        compose(environment, "down", "--timeout", "40")
    print(f"start to first answer: median {statistics.median(times):.2f} s, "
          f"{min(times):.2f}–{max(times):.2f} s over {len(times)} rounds")


if __name__ == "__main__":
    main()
