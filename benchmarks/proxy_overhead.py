"""What the front proxy costs: the compose stack through nginx, and straight to its api.

Run from the repository root, e.g.:
    python -m benchmarks.proxy_overhead --archive ../shared/datasets/cifar10-train.tar.gz
It starts the compose stack (one api replica) with the api's port also published on
127.0.0.1 (benchmarks/compose-direct.yml), then runs wrk at each level of clients against
both, alternating, for --rounds rounds, and prints a table. COMPOSE_FILE, when set, is
honoured (the override is added to it). The load generator is wrk (apt-get install -y wrk).
"""

import json
import os
import statistics
import subprocess
import tempfile
import time

from benchmarks import load
from benchmarks.run_benchmark import ROOT, prepare_images
from benchmarks.sample import image_parser

OVERRIDE = os.path.join("benchmarks", "compose-direct.yml")
TARGETS = ("proxy", "direct")


def parse_args(argv):
    """The command line."""
    parser = image_parser("python -m benchmarks.proxy_overhead", __doc__)
    parser.add_argument("--clients", default="1,32", help="levels of clients (1,32)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per measurement (10)")
    parser.add_argument("--warmup-seconds", type=int, default=3, help="seconds of warm-up (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every level (3)")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=int, default=30, help="wrk's request timeout (30 s)")
    parser.add_argument("--proxy-port", type=int, default=18090)
    parser.add_argument("--api-port", type=int, default=18091)
    parser.add_argument("--grpc-port", type=int, default=18092,
                        help="the proxy's gRPC port, unused here (18092)")
    parser.add_argument("--project", default="proxy-benchmark", help="compose project name")
    parser.add_argument("--output", default="benchmark-results")
    args = parser.parse_args(argv)
    args.clients = [int(value) for value in args.clients.split(",")]
    return args


def direct_environment(project, **settings):
    """The environment of a compose project whose api also publishes its own ports on
    loopback (benchmarks/compose-direct.yml), with `settings` beside the runner's."""
    base_files = os.environ.get("COMPOSE_FILE", "docker-compose.yml")
    return {**os.environ, "COMPOSE_PROJECT_NAME": project,
            "COMPOSE_FILE": f"{base_files}:{OVERRIDE}", **settings}


def compose(environment, *arguments, timeout=600):
    """Run `docker compose` for the benchmark's project; stop with its output if it fails."""
    finished = subprocess.run(["docker", "compose", *arguments], cwd=ROOT, env=environment,
                              capture_output=True, text=True, timeout=timeout)
    if finished.returncode != 0:
        raise SystemExit(f"docker compose {' '.join(arguments)} failed:\n{finished.stderr}")
    return finished.stdout


def summarize(measurements, clients):
    """Median requests/s and p99 per target and level, and the proxy's share of direct."""
    rows = []
    for level in clients:
        row = {"clients": level}
        for target in TARGETS:
            runs = [run for run in measurements if run["target"] == target
                    and run["clients"] == level]
            row[target] = {"requests_per_second": statistics.median(
                               run["requests_per_second"] for run in runs),
                           "p99_ms": statistics.median(run["p99_ms"] for run in runs)}
        row["ratio"] = (row["proxy"]["requests_per_second"]
                        / row["direct"]["requests_per_second"])
        rows.append(row)
    return rows


def format_table(rows, rounds):
    """The summary as a Markdown table."""
    header = ("| clients | through the proxy: requests/s, p99 ms "
              "| straight to the api: requests/s, p99 ms | proxy ÷ direct |")
    lines = [header, "| ---: | ---: | ---: | ---: |"]
    for row in rows:
        proxy, direct = row["proxy"], row["direct"]
        lines.append(f"| {row['clients']} | {proxy['requests_per_second']:,.1f}, "
                     f"{proxy['p99_ms']:.1f} | {direct['requests_per_second']:,.1f}, "
                     f"{direct['p99_ms']:.1f} | {row['ratio']:.2f} |")
    lines.append(f"\n(medians of {rounds} rounds)")
    return "\n".join(lines)


def main(argv=None):
    """Start the stack, measure both paths alternately, print and save the figures."""
    args = parse_args(argv)
    load.require_wrk()
    os.makedirs(args.output, exist_ok=True)
    environment = direct_environment(
        args.project, API_PORT=str(args.proxy_port), BENCH_API_PORT=str(args.api_port),
        # HTTP alone, as before gRPC was served; its port is any free one.
        GRPC_ENABLED="0", API_GRPC_PORT=str(args.grpc_port))
    urls = {"proxy": f"http://127.0.0.1:{args.proxy_port}/predict",
            "direct": f"http://127.0.0.1:{args.api_port}/predict"}
    measurements = []
    with tempfile.TemporaryDirectory(prefix="proxy-benchmark-") as work_dir:
        image_list, count = prepare_images(args, work_dir)
        compose(environment, "up", "--detach", "--build", "--wait")
        try:
            for target in TARGETS:
                load.run_wrk(urls[target], image_list, max(args.clients), args.warmup_seconds,
                             args.max_requests, args.timeout, warmup=True)
            for round_number in range(args.rounds):
                for clients in args.clients:
                    # Alternate which goes first, so a drift in the machine's load is shared.
                    order = TARGETS if round_number % 2 == 0 else TARGETS[::-1]
                    for target in order:
                        level = load.run_wrk(urls[target], image_list, clients, args.seconds,
                                             args.max_requests, args.timeout)
                        level["target"] = target
                        print(f"round {round_number + 1}, {target}, {clients} clients: "
                              f"{level['requests_per_second']:.1f} requests/s, "
                              f"p99 {level['p99_ms']:.1f} ms", flush=True)
                        measurements.append(level)
                        time.sleep(1)
        finally:
            compose(environment, "down", "--timeout", "40")
    rows = summarize(measurements, args.clients)
    table = format_table(rows, args.rounds)
    print(f"\n{count} images, wrk with one thread, {args.seconds} s per measurement\n\n{table}")
    with open(os.path.join(args.output, "proxy-overhead.json"), "w", encoding="utf-8") as file:
        json.dump({"measurements": measurements, "summary": rows}, file, indent=2)
    with open(os.path.join(args.output, "proxy-overhead.md"), "w", encoding="utf-8") as file:
        file.write(table + "\n")


if __name__ == "__main__":
    main()
