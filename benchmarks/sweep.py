"""Measure the service over a grid of settings, to choose the defaults by measurement.

Run from the repository root, e.g.:
    python -m benchmarks.sweep --images /tmp/data/cifar10/train --clients 1,32 --seconds 10 \\
        --repeat 3 --grid THREADS=4,8,16 --grid MODEL_THREADS=1,2
Each combination is one `benchmarks.run_benchmark --only service` run; repeats go round
the whole grid, so a disturbance on a shared machine spreads over every combination.
"""

import argparse
import itertools
import json
import os
import statistics

from benchmarks import run_benchmark
from benchmarks.report import MIB


def parse_args(argv):
    """Read the grid and pass every other option on to run_benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2,...",
                        help="a service setting and the values to try (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the grid (1)")
    parser.add_argument("--output", default="benchmark-results/sweep")
    args, passed_on = parser.parse_known_args(argv)
    grid = {}
    for entry in args.grid:
        name, _, values = entry.partition("=")
        if not values:
            parser.error("--grid takes NAME=V1,V2,...")
        grid[name] = values.split(",")
    return grid, args.repeat, args.output, passed_on


def measure(settings, folder, passed_on):
    """One service-only benchmark run with these settings; its results."""
    run_benchmark.main([*passed_on, "--only", "service", "--output", folder,
                        *itertools.chain.from_iterable(
                            ("--service-env", f"{name}={value}")
                            for name, value in settings.items())])
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as file:
        return json.load(file)["service"]


def summary_cells(runs):
    """Median figures over the repeats, per level, and the worst disturbance seen."""
    cells = []
    for levels in zip(*(run["levels"] for run in runs), strict=True):
        cells.append(", ".join(f"{statistics.median(level[key] for level in levels):{form}}"
                               for key, form in (("requests_per_second", ".0f"),
                                                 ("p50_ms", ".1f"), ("p99_ms", ".1f"))))
    cells.append(f"{statistics.median(run['ready_seconds'] for run in runs):.2f}")
    cells.append(f"{max(run['peak_rss_bytes'] for run in runs) / MIB:.0f}")
    cells.append(f"{max(level['other_cpu_share'] for run in runs for level in run['levels']):.0%}")
    return cells


def main(argv=None):
    """Run every combination `repeat` times, then print one markdown row per combination."""
    grid, repeat, output, passed_on = parse_args(argv)
    names = list(grid)
    combinations = [dict(zip(names, values, strict=True))
                    for values in itertools.product(*grid.values())]
    runs = {index: [] for index in range(len(combinations))}
    for round_number in range(repeat):
        for index, settings in enumerate(combinations):
            folder = os.path.join(output, f"round{round_number}", "-".join(
                f"{name}={value}" for name, value in settings.items()))
            runs[index].append(measure(settings, folder, passed_on))
    levels = [level["clients"] for level in runs[0][0]["levels"]]
    print(f"Medians over {repeat} round(s); other CPU is the most that other processes used "
          "in any level.")
    print("| " + " | ".join(names) + " | "
          + " | ".join(f"{clients} clients: requests/s, p50, p99 ms" for clients in levels)
          + " | ready s | peak RSS MiB | other CPU |")
    print("|" + " --- |" * (len(names) + len(levels) + 3))
    for index, settings in enumerate(combinations):
        print("| " + " | ".join([*(settings[name] for name in names),
                                 *summary_cells(runs[index])]) + " |")


if __name__ == "__main__":
    main()
