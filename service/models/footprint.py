"""What a model version holds in memory, and whether it fits this worker's share of the limit.

A worker loads a version only if it fits what is left of its share of the memory limit:
the container's (its cgroup's, or MEMORY_LIMIT_MB) less a reserve for gunicorn's master,
divided by WORKERS, less what the worker holds now. During a swap the version being
replaced is still held, so both count.

What a version needs is known before it loads. First an upper bound, read from its
model.tflite without loading it (`upper_bound_bytes`): when that fits, the version loads at
once, and a start is not slowed. Otherwise a short-lived child process loads it exactly
as the worker would (the same batch size and threads) and reports how much the memory it
cannot drop grew (`resident_bytes`): XNNPACK's packed copy of the weights in each
interpreter and their workspaces (LiteRT does not report its arena, so this is measured).
The model file itself is mapped, not read: page cache, shared by every worker. A child
that the kernel kills for memory costs only itself: it asks to be killed first
(oom_score_adj 1000), before any worker.

A version that would not fit is refused with the reason, as a broken version is (in
/models, the log and `model_versions_refused`), and the versions already serving keep
serving. Once loaded, what it added to the worker is in /models and `model_memory_bytes`.

Run as a command, this module is that child: python -m service.models.footprint FOLDER ...
"""

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from service.models.artifact import TFLITE_FILE
from service.models.inference import (
    ALL_CORES_MAX_BATCH,
    INTERPRETER_MAX_BATCH,
    ModelLoadError,
    ModelTooLargeError,
    ServingModel,
)

log = logging.getLogger("service.models")

MIB = 1024 * 1024
# gunicorn's master and the metrics files in /tmp (a tmpfs in compose): not a worker's.
MASTER_RESERVE_BYTES = 48 * MIB
# cgroup v2, then v1; "max" or a huge number means no limit.
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
NO_LIMIT = 1 << 60
TRIAL_TIMEOUT_SECONDS = 120
# What a process's first load allocates besides the model (LiteRT's and XNNPACK's own state).
FIRST_LOAD_BYTES = 8 * MIB
# Bytes per element of LiteRT's tensor types (schema.fbs TensorType); others count as 8.
TENSOR_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8}
# The child's exit status when the folder holds no usable model (its message on stderr).
UNUSABLE = 2
# Where `python -m service...` finds the package, whatever the worker's own folder.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def memory_limit_bytes(setting_mib: int = 0) -> int | None:
    """The memory limit the service runs under: MEMORY_LIMIT_MB, else its cgroup's; None
    when there is none."""
    if setting_mib:
        return setting_mib * MIB
    for path in CGROUP_LIMIT_FILES:
        try:
            with open(path, encoding="ascii") as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < NO_LIMIT:
            return int(text)
        return None
    return None


def worker_share_bytes(limit: int | None, workers: int) -> int | None:
    """One worker's share of `limit`, after the master's reserve."""
    if limit is None:
        return None
    return max(0, limit - MASTER_RESERVE_BYTES) // max(1, workers)


def resident_bytes(pid: int | str = "self") -> int:
    """A process's memory now that the kernel cannot drop (this one's by default): its
    anonymous and shared pages (RssAnon + RssShmem). A model file's mapped pages are left
    out: they are the page cache's, one copy for every worker, and clean, so memory pressure
    reclaims them first."""
    total = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("RssAnon:", "RssShmem:")):
                total += int(line.split()[1]) * 1024
    return total


def trial_load(path: str, warm_batch_size: int, threads: int, all_core_threads: int) -> int:
    """Bytes the version at `path` adds to a process that loads it, measured in a child;
    ModelLoadError when it cannot be loaded at all."""
    command = [sys.executable, "-m", "service.models.footprint", path,
               "--batch", str(warm_batch_size), "--threads", str(threads),
               "--all-core-threads", str(all_core_threads)]
    try:
        finished = subprocess.run(command, capture_output=True, text=True,
                                  timeout=TRIAL_TIMEOUT_SECONDS, cwd=PROJECT_ROOT)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"a trial load took over {TRIAL_TIMEOUT_SECONDS} s") from None
    if finished.returncode == UNUSABLE:
        raise ModelLoadError(finished.stderr.strip().splitlines()[-1])
    if finished.returncode == -9:  # the kernel's OOM killer, which takes the child first
        raise ModelTooLargeError("it would not fit: a trial load of it was killed for memory")
    if finished.returncode != 0:
        raise ModelLoadError(f"a trial load of it failed: it exited with status "
                             f"{finished.returncode}")
    return int(json.loads(finished.stdout.strip().splitlines()[-1])["bytes"])


def upper_bound_bytes(path: str, warm_batch_size: int, threads: int,
                      all_core_threads: int) -> int:
    """More than loading the version at `path` can add to a process, read from its
    model.tflite without loading it; 0 when the file cannot be read as a model.

    Each interpreter holds the weights packed again and a workspace for the activations
    of the images it runs (the file itself is mapped, page cache); the bound takes twice
    every activation tensor, as if none shared memory, and two copies of the file per
    interpreter, plus what a first load allocates. Tests check it against trial loads of
    the shipped models.
    """
    try:
        with open(os.path.join(path, TFLITE_FILE), "rb") as file:
            content = file.read()
        per_image = _activation_bytes(content)
    except Exception:  # noqa: BLE001 - a file that is no model: the trial load says why
        return 0
    images = min(warm_batch_size, INTERPRETER_MAX_BATCH)
    runners = 1
    if all_core_threads != threads:
        runners, images = 2, images + ALL_CORES_MAX_BATCH
    return FIRST_LOAD_BYTES + 2 * len(content) * runners + 2 * per_image * images


def _activation_bytes(content: bytes) -> int:
    """The bytes of every tensor of one image that is not a constant, in a .tflite model."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    total = 0
    for index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(index)
        for number in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(number)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 0):
                continue  # weights, counted with the file
            shape = tensor.ShapeAsNumpy()
            elements = math.prod(max(1, int(side)) for side in shape) if len(shape) else 1
            total += elements * TENSOR_TYPE_BYTES.get(tensor.Type(), 8)
    return total


class FittingLoader:
    """Loads a version only if it fits this worker's share; records what it holds.

    A version whose upper bound fits is loaded at once; otherwise a trial load measures
    what it needs, so the answer is exact where it matters and a start is not slowed.
    """

    def __init__(self, load: Callable[[str], ServingModel], share: int | None,
                 trial: Callable[[str], int], bound: Callable[[str], int] = lambda path: 0):
        self._load, self.share, self._trial, self._bound = load, share, trial, bound

    def __call__(self, path: str) -> ServingModel:
        """The loaded version (ModelLoadError when it is unusable or would not fit)."""
        held = resident_bytes()
        if self.share is not None and not 0 < self._bound(path) <= self.share - held:
            # At least one packed copy of the weights: with the file mapped, not read, a
            # version on one core holds 1.6 times its file (docs/performance.md), so twice
            # the file is no longer a floor.
            least = _file_bytes(path)
            if held + least > self.share:  # no trial: it cannot fit
                self._refuse(least, held)
            needed, held = self._trial(path), resident_bytes()  # the trial took a while
            log.info("a trial load of %s needs %.1f MiB; this worker holds %.1f of its %.1f MiB",
                     path, needed / MIB, held / MIB, self.share / MIB,
                     extra={"event": "model_trial_load", "needed_bytes": needed,
                            "held_bytes": held, "share_bytes": self.share})
            if held + needed > self.share:
                self._refuse(needed, held)
        before = resident_bytes()
        model = self._load(path)
        # What the load added here; other threads allocate meanwhile, so it is a reading.
        model.memory_bytes = max(0, resident_bytes() - before)
        return model

    def _refuse(self, needed: int, held: int) -> None:
        raise ModelTooLargeError(
            f"it would not fit: it needs {needed / MIB:.0f} MiB in each worker, and this "
            f"worker holds {held / MIB:.0f} MiB of its {self.share / MIB:.0f} MiB share of the "
            f"memory limit; raise the limit (or MEMORY_LIMIT_MB), keep fewer versions loaded, "
            f"or serve a smaller model")


def _file_bytes(path: str) -> int:
    """The size of the version's model.tflite (0 when it cannot be read)."""
    try:
        return os.path.getsize(os.path.join(path, TFLITE_FILE))
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    """The child: load the version as a worker would, print the bytes it added as JSON."""
    parser = argparse.ArgumentParser(prog="python -m service.models.footprint")
    parser.add_argument("folder")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--all-core-threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:  # the kernel's first choice when memory runs out: this child, never a worker
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as adjust:
            adjust.write("1000")
    except OSError:
        pass
    before = resident_bytes()
    try:
        model = ServingModel(args.folder, warm_batch_size=args.batch, threads=args.threads,
                             all_core_threads=args.all_core_threads)
    except ModelLoadError as error:
        print(error, file=sys.stderr)
        return UNUSABLE
    print(json.dumps({"bytes": resident_bytes() - before}))  # read while it is still held
    del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
