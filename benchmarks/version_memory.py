"""What each loaded model version adds to one process, as a worker loads it; prints JSON.

    python -m benchmarks.version_memory models/cifar10/2 models/cifar10/3 --loads 4

Loads the folders in turn, round-robin, until --loads versions are held (the same version
again counts as another: a canary of a retrain is much the same model), with the worker's
default interpreters (batch 32 in invokes of up to 4, a lone-image interpreter on every
core). For each load it reads what the service counts (RssAnon + RssShmem, memory the
kernel cannot drop) and VmRSS (which also counts the model file's mapped pages once per
interpreter, though they are one shared copy in the page cache), before and after.
"""

import argparse
import json
import os

from benchmarks.processes import resident_bytes as vm_rss_bytes
from service.models.artifact import TFLITE_FILE
from service.models.footprint import MIB, resident_bytes
from service.models.inference import ServingModel


def main(argv=None):
    """Load the versions in turn and print what each load added."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.version_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="version folders (models/<name>/<version>)")
    parser.add_argument("--loads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="BATCH_MAX_SIZE (32)")
    parser.add_argument("--threads", type=int, default=1, help="a worker's own threads (1)")
    parser.add_argument("--all-core-threads", type=int, default=os.cpu_count() or 1,
                        help="threads of the lone-image interpreter (every core; 1 for none)")
    args = parser.parse_args(argv)
    held, rows = [], []
    for load in range(args.loads):
        folder = args.folders[load % len(args.folders)]
        counted, rss = resident_bytes(), vm_rss_bytes(os.getpid())
        held.append(ServingModel(folder, warm_batch_size=args.batch, threads=args.threads,
                                 all_core_threads=args.all_core_threads))
        file_bytes = os.path.getsize(os.path.join(folder, TFLITE_FILE))
        added = resident_bytes() - counted
        rows.append({"load": load + 1, "folder": folder,
                     "counted_mib": round(added / MIB, 2),
                     "vm_rss_mib": round((vm_rss_bytes(os.getpid()) - rss) / MIB, 2),
                     "times_the_file": round(added / file_bytes, 2)})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
