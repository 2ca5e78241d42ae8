"""What a canary costs: requests/s and p99 with no policy, a 10% split and 10% shadowing,
side by side on one running service; and the memory of the api with one and two models.

    python -m benchmarks.release_policies --archive ../shared/datasets/cifar10-train.tar.gz

The service serves a copy of the models folder in which version 3 of the model is a copy of
its newest version: the canary does the same work as stable, so a split costs only the
routing, and shadowing costs the copies' extra model calls. The policies take turns
(--rounds of each, in the same order), each on the same server after the change has reached
both workers, so the figures are compared within one run. Every server listens on
127.0.0.1; the load generator is wrk (apt-get install -y wrk).
"""

import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.request

from benchmarks import load
from benchmarks.processes import MemoryWatch, Server, process_tree, resident_bytes, wait_until_idle
from benchmarks.run_benchmark import prepare_images
from benchmarks.sample import image_parser
from service.models import release
from service.models.artifact import POLICY_FILE, complete_versions

POLICIES = ("none", "split 10%", "shadow 10%")


# The options beside the image ones: flag, type, default, what it sets.
OPTIONS = (("--models", str, "models", "models folder to copy"),
           ("--model-name", str, "cifar10", "the model measured"),
           ("--second-model", str, "digits", "the other model, for the memory figure"),
           ("--clients", int, 32, "concurrent clients"),
           ("--seconds", int, 10, "seconds per run"),
           ("--rounds", int, 3, "runs of each policy"),
           ("--port", int, 18100, "the service's port on 127.0.0.1"))


def parse_args(argv, prog="python -m benchmarks.release_policies", description=__doc__,
               options=OPTIONS):
    """Read the command line: the image options, then `options` (another benchmark's too)."""
    parser = image_parser(prog, description)
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} ({default})")
    return parser.parse_args(argv)


def copy_models(source, target, names, candidate_of=None):
    """Copy the models `names` from `source`; with `candidate_of`, add its newest version
    again as the next one, the canary."""
    for name in names:
        shutil.copytree(os.path.join(source, name), os.path.join(target, name),
                        ignore=shutil.ignore_patterns(".tmp-*", POLICY_FILE, ".serving.lock"))
    if candidate_of:
        folder = os.path.join(target, candidate_of)
        newest = complete_versions(folder)[0]
        shutil.copytree(os.path.join(folder, str(newest)), os.path.join(folder, str(newest + 1)))
        return newest, newest + 1
    return None


def apply_policy(folder, policy, stable, canary):
    """Write the policy for this run: none, or the canary at 10% split or shadow."""
    path = os.path.join(folder, POLICY_FILE)
    if policy == "none":
        if os.path.exists(path):
            os.unlink(path)
        return
    release.promote(folder, stable)
    release.set_canary(folder, canary, 10, policy.split()[0])


def wait_for_policy(server, name, policy, workers=2, timeout=60):
    """Wait until every worker routes as `policy` says (each worker polls on its own)."""
    wanted = None if policy == "none" else policy.split()[0]
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(server.url(f"/models/{name}"), timeout=5) as answer:
            canary = json.load(answer)["canary"]
        seen = seen + 1 if (canary or {}).get("mode") == wanted else 0
        # Answers come from either worker; several in a row agreeing means both have it.
        if seen >= 4 * workers:
            return
        time.sleep(0.25)
    raise SystemExit(f"the service never routed as {policy!r}")


def measure(server, image_list, args):
    """One wrk run at --clients after a short warm-up; (requests/s, p99 ms)."""
    load.run_wrk(server.url("/predict"), image_list, args.clients, 2, 100_000, 30, warmup=True)
    wait_until_idle(server.process.pid)
    level = load.run_wrk(server.url("/predict"), image_list, args.clients, args.seconds,
                         200_000, 30)
    wait_until_idle(server.process.pid)
    return level["requests_per_second"], level["p99_ms"]


def worker_rss(server):
    """Each worker's resident memory in MiB (the master's children)."""
    return [resident_bytes(pid) / 2 ** 20 for pid in process_tree(server.process.pid)[1:]]


def memory_of(models_dir, names, image_list, args, work):
    """Start the service on `names`; return (peak RSS of all its processes, per-worker RSS)
    in MiB, after a warm-up load."""
    folder = os.path.join(work, "-".join(names))
    os.makedirs(folder)
    copy_models(models_dir, folder, names)
    server = start(folder, args, os.path.join(work, f"memory-{len(names)}.log"))
    try:
        with MemoryWatch(server.process.pid) as watch:
            measure(server, image_list, args)
        return watch.peak_bytes / 2 ** 20, worker_rss(server)
    finally:
        server.stop()


def start(models_dir, args, log_path):
    """The service with its default settings on `models_dir`, ready."""
    environment = {"HOST": "127.0.0.1", "PORT": str(args.port), "MODEL_DIR": models_dir,
                   "MODEL_NAME": args.model_name, "MODEL_POLL_SECONDS": "1"}
    server = Server("service", [".venv/bin/gunicorn", "-c", "service/process/gunicorn_conf.py"],
                    args.port, environment, log_path, "/health/ready")
    server.wait_ready()
    return server


def spread(values):
    """median (min-max), as text."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv=None):
    """Run every policy --rounds times in turn; print the table and the memory figures."""
    args = parse_args(argv)
    work = tempfile.mkdtemp(prefix="release-policies-")
    image_list, _ = prepare_images(args, work)
    models_dir = os.path.join(work, "models")
    stable, canary = copy_models(args.models, models_dir, [args.model_name], args.model_name)
    folder = os.path.join(models_dir, args.model_name)
    figures = {policy: [] for policy in POLICIES}
    workers = {policy: [] for policy in POLICIES}
    server = start(models_dir, args, os.path.join(work, "service.log"))
    try:
        for round_number in range(1, args.rounds + 1):
            for policy in POLICIES:
                apply_policy(folder, policy, stable, canary)
                wait_for_policy(server, args.model_name, policy)
                rate, p99 = measure(server, image_list, args)
                figures[policy].append((rate, p99))
                workers[policy].extend(worker_rss(server))
                print(f"round {round_number}, {policy}: {rate:.1f} requests/s, "
                      f"p99 {p99:.1f} ms", flush=True)
    finally:
        server.stop()
    print(f"\n{args.clients} clients, {args.seconds} s per run, {args.rounds} rounds "
          f"(median (min-max); ratio: per round, against that round's run with no policy)")
    print("| policy | requests/s | p99 ms | requests/s ratio | p99 ratio |")
    print("| --- | --- | --- | --- | --- |")
    for policy in POLICIES:
        rates = [rate for rate, _ in figures[policy]]
        tails = [p99 for _, p99 in figures[policy]]
        rate_ratios = [rate / base for (rate, _), (base, _) in zip(figures[policy],
                                                                    figures["none"], strict=True)]
        tail_ratios = [p99 / base for (_, p99), (_, base) in zip(figures[policy],
                                                                  figures["none"], strict=True)]
        print(f"| {policy} | {spread(rates)} | {spread(tails)} | "
              f"{statistics.median(rate_ratios):.3f} ({min(rate_ratios):.3f}-"
              f"{max(rate_ratios):.3f}) | {statistics.median(tail_ratios):.3f} "
              f"({min(tail_ratios):.3f}-{max(tail_ratios):.3f}) |")
    print(f"\nper worker after its run (MiB, median (min-max)): one version of "
          f"{args.model_name} loaded (no policy) {spread(workers['none'])}; two (split) "
          f"{spread(workers['split 10%'])}")
    one = memory_of(args.models, [args.model_name], image_list, args, work)
    two = memory_of(args.models, [args.model_name, args.second_model], image_list, args, work)
    print(f"\nmemory after {args.clients} clients for {args.seconds} s (MiB): "
          f"{args.model_name} alone: all processes {one[0]:.0f}, workers "
          f"{', '.join(f'{rss:.0f}' for rss in one[1])}; with {args.second_model}: all "
          f"processes {two[0]:.0f}, workers {', '.join(f'{rss:.0f}' for rss in two[1])}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
