"""The prediction store's commands: erase what a person asks to have forgotten, apply the bounds.

    python -m service.store erase --prediction-id ID      # one prediction, its feedback
    python -m service.store erase --sha256 HEX            # every prediction of an image, the image
    python -m service.store upkeep                        # retention and quota, now

The store is PREDICTION_STORE (or --store). What was erased is printed as JSON; nothing
found is not an error (erasing twice is safe). Bad input: one line on stderr, exit 2; a
store that cannot be reached: exit 1.
"""

import argparse
import json
import os
import re
import sys

from service.config import Settings
from service.store.database import Database, StoreSchemaError, StoreUnavailableError
from service.store.maintenance import enforce_bounds, erase

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    commands = argparse.ArgumentParser(prog="python -m service.store", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    commands.add_argument("--store", default=os.environ.get("PREDICTION_STORE", ""),
                          help="a SQLite folder or a postgresql:// URL (PREDICTION_STORE)")
    steps = commands.add_subparsers(dest="command", required=True)
    erasing = steps.add_parser("erase", help="erase by prediction id or image sha256")
    which = erasing.add_mutually_exclusive_group(required=True)
    which.add_argument("--prediction-id")
    which.add_argument("--sha256", type=str.lower)
    steps.add_parser("upkeep", help="apply PREDICTION_STORE_RETENTION_DAYS and _QUOTA_BYTES")
    return commands


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status."""
    arguments = parser().parse_args(argv)
    if not arguments.store:
        print("no store: set PREDICTION_STORE or pass --store", file=sys.stderr)
        return 2
    if arguments.command == "erase" and arguments.sha256 and not SHA256.match(arguments.sha256):
        print("--sha256 takes 64 hexadecimal digits", file=sys.stderr)
        return 2
    database = Database(arguments.store)
    try:
        if arguments.command == "erase":
            done = erase(database, arguments.prediction_id, arguments.sha256)
        else:
            settings = Settings.from_env()
            done = enforce_bounds(database, settings.prediction_store_retention_days,
                                  settings.prediction_store_quota_bytes)
    except (StoreUnavailableError, StoreSchemaError) as error:
        print(f"prediction store: {error}", file=sys.stderr)
        return 1
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
