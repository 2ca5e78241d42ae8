"""Peak memory and process counts of a running compose project's containers under load.

The compose limits (docker-compose.yml: mem_limit, pids_limit) come from these figures:

    python -m benchmarks.container_peaks --project NAME --url https://127.0.0.1:8443/predict \\
        --images DIR --clients 32 --seconds 60 [--header "X-API-Key: ..."] [--swap MODEL_DIR]

It reads each container's cgroup from the host (/sys/fs/cgroup; a local Linux engine):
the kernel's own memory peak (cgroup v1 memory.max_usage_in_bytes, v2 memory.peak: every
byte charged, page cache and tmpfs included, as the limit counts them) and the number of
tasks (processes and threads, what pids_limit counts), sampled every 0.2 s, while wrk posts
the JPEGs in DIR through benchmarks/post_images.lua. `--swap DIR` publishes a copy of the
newest version in DIR (a model folder of the project's MODELS_DIR) half-way, so that the
api holds two versions for a moment, as at a real model swap.
"""

import argparse
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

from benchmarks import load

CGROUP = Path("/sys/fs/cgroup")


def containers(project):
    """{compose service name: container id} of the project's running containers."""
    output = subprocess.run(["docker", "ps", "--no-trunc", "--filter",
                             f"label=com.docker.compose.project={project}", "--format",
                             '{{.ID}} {{.Label "com.docker.compose.service"}}'],
                            capture_output=True, text=True, check=True).stdout
    return {service: container for container, service in
            (line.split() for line in output.splitlines())}


def read_number(*candidates):
    """The integer in the first of `candidates` (paths) that exists."""
    for path in candidates:
        if path.exists():
            return int(path.read_text().split()[0])
    raise FileNotFoundError(f"none of {[str(path) for path in candidates]}")


def memory_peak(container):
    """Bytes: the most the container's cgroup has been charged since it started."""
    return read_number(CGROUP / "memory" / "docker" / container / "memory.max_usage_in_bytes",
                       *CGROUP.glob(f"system.slice/docker-{container}.scope/memory.peak"))


def tasks(container):
    """Processes and threads in the container's cgroup now."""
    return read_number(CGROUP / "pids" / "docker" / container / "pids.current",
                       *CGROUP.glob(f"system.slice/docker-{container}.scope/pids.current"))


def publish_copy(model_dir):
    """Publish the newest version in `model_dir` again as the next one, the trainer's way."""
    versions = sorted(int(entry.name) for entry in Path(model_dir).iterdir()
                      if entry.name.isdigit())
    staging = Path(model_dir) / f".tmp-{versions[-1] + 1}"
    shutil.copytree(Path(model_dir) / str(versions[-1]), staging)
    metadata = staging / "metadata.json"
    content = json.loads(metadata.read_text())
    content["version"] = versions[-1] + 1
    metadata.write_text(json.dumps(content))
    staging.rename(Path(model_dir) / str(versions[-1] + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="the compose project's name")
    parser.add_argument("--url", required=True, help="where wrk posts the images")
    parser.add_argument("--images", required=True, help="a folder of JPEGs")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--header", action="append", default=[], help="passed to wrk -H")
    parser.add_argument("--swap", help="a model folder to publish a new version into half-way")
    args = parser.parse_args(argv)

    running = containers(args.project)
    image_list = Path("/tmp") / f"container-peaks-{args.project}.txt"
    image_list.write_text("\n".join(str(path) for path in sorted(Path(args.images).glob("*.jpg"))))
    most_tasks = dict.fromkeys(running, 0)
    done = threading.Event()

    def sample():
        while not done.is_set():
            for service, container in running.items():
                most_tasks[service] = max(most_tasks[service], tasks(container))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    command = [load.require_wrk(), "--threads", "1", "--connections", str(args.clients),
               "--duration", f"{args.seconds}s", "--timeout", "30s",
               *[option for header in args.header for option in ("-H", header)],
               "--script", load.SCRIPT, args.url, "--", str(image_list), "1000000000",
               "multipart"]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if args.swap:
        time.sleep(args.seconds / 2)
        publish_copy(args.swap)
    output, _ = wrk.communicate(timeout=args.seconds + 60)
    done.set()
    sampler.join()
    result = next((json.loads(line[len(load.RESULT_MARK):]) for line in output.splitlines()
                   if line.startswith(load.RESULT_MARK)), {"wrk": output[-500:]})
    print(json.dumps({"wrk": result, "containers": {
        service: {"memory_peak_mib": round(memory_peak(container) / 2**20, 1),
                  "tasks_peak": most_tasks[service]}
        for service, container in running.items()}}, indent=2))


if __name__ == "__main__":
    main()
