"""Labelled images from the prediction store, as a training folder: the production cases,
with the true classes people sent back.

    python -m model_training.dataset export --store /app/store --output /data/feedback
    python -m model_training.train --data-dir /data/cifar10 --data-dir /data/feedback ...

Every kept image (PREDICTION_STORE_SAMPLE of them) whose prediction got feedback is written
once, as <output>/<true class>/<sha256>.<format>. When feedback on one image disagrees
(several predictions of it, different people), the class most of it names wins, the latest on
a tie, and the manifest says so. `manifest.json` beside the class folders lists each image:
its sha256, class, file, how many predictions and feedbacks it had, and the store it came from
(never a password). The folder is written whole under a temporary name, then renamed: a
trainer never reads half an export. No TensorFlow needed.
"""

import argparse
import collections
import datetime
import json
import os
import shutil
import sys
import tempfile

from service.store.database import Database, StoreSchemaError, StoreUnavailableError

MANIFEST = "manifest.json"
# Formats as the store names them (Pillow's names, lower case) -> a file name extension.
EXTENSIONS = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "webp": "webp",
              "tiff": "tiff"}


class ExportError(Exception):
    """An export that cannot be made; the message says why."""


def labelled_images(database: Database, model: str | None) -> dict[str, dict]:
    """sha256 -> {"format", "votes": [(created_at, class, prediction_id, model, version)]}."""
    where, parameters = ("AND p.model = ?", (model,)) if model else ("", ())
    with database.transaction() as session:
        rows = session.run(
            "SELECT i.image_sha256, i.format, f.created_at, f.true_class, p.prediction_id, "
            "p.model, p.version FROM images i "
            "JOIN predictions p ON p.image_sha256 = i.image_sha256 "
            f"JOIN feedback f ON f.prediction_id = p.prediction_id WHERE 1 = 1 {where} "
            "ORDER BY i.image_sha256, f.created_at", parameters)
    found: dict[str, dict] = {}
    for sha256, image_format, created_at, true_class, prediction_id, name, version in rows:
        entry = found.setdefault(sha256, {"format": image_format, "votes": []})
        entry["votes"].append((created_at, true_class, prediction_id, name, version))
    return found


def image_data(database: Database, sha256: str) -> bytes:
    """One kept image's bytes."""
    with database.transaction() as session:
        return bytes(session.run("SELECT data FROM images WHERE image_sha256 = ?",
                                 (sha256,))[0][0])


def chosen_class(votes: list[tuple]) -> str:
    """The class most feedback on an image names; on a tie, the latest of those."""
    counts = collections.Counter(vote[1] for vote in votes)
    best = max(counts.values())
    return next(vote[1] for vote in reversed(votes) if counts[vote[1]] == best)


def export(database: Database, output: str, model: str | None = None) -> dict:
    """Write the labelled images into `output` (which must not exist yet); the manifest."""
    if os.path.exists(output):
        raise ExportError(f"{output} exists already: export into a new folder")
    found = labelled_images(database, model)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        entries = [_write_image(database, staging, sha256, entry)
                   for sha256, entry in sorted(found.items())]
        manifest = {
            "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "store": database.where, "model": model,
            "classes": dict(sorted(collections.Counter(e["class"] for e in entries).items())),
            "images": entries}
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as file:
            json.dump(manifest, file, indent=1)
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_image(database: Database, folder: str, sha256: str, entry: dict) -> dict:
    """Write one image under its class; its manifest entry."""
    votes = entry["votes"]
    true_class = chosen_class(votes)
    if true_class.startswith(".") or "/" in true_class or "\\" in true_class:
        raise ExportError(f"class {true_class!r} cannot be a folder name")
    name = f"{sha256}.{EXTENSIONS.get(entry['format'], entry['format'])}"
    os.makedirs(os.path.join(folder, true_class), exist_ok=True)
    with open(os.path.join(folder, true_class, name), "wb") as file:
        file.write(image_data(database, sha256))
    return {"sha256": sha256, "class": true_class, "file": f"{true_class}/{name}",
            "feedback": len(votes), "disagreed": len({vote[1] for vote in votes}) > 1,
            "predictions": [{"prediction_id": vote[2], "model": vote[3], "version": vote[4],
                             "class": vote[1]} for vote in votes]}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Read the command line; argparse itself exits 2 on a malformed one."""
    parser = argparse.ArgumentParser(prog="python -m model_training.dataset",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="labelled images from the prediction store "
                                                   "into class folders, with a manifest")
    exporting.add_argument("--store", default=os.environ.get("PREDICTION_STORE", ""),
                           help="a SQLite folder or a postgresql:// URL (PREDICTION_STORE)")
    exporting.add_argument("--model", help="only this model's predictions (default: all)")
    exporting.add_argument("--output", required=True, help="a new folder to write")
    args = parser.parse_args(argv)
    if not args.store:
        parser.error("no store: set PREDICTION_STORE or pass --store")
    return args


def main(argv: list[str] | None = None) -> int:
    """Export; print a summary. Exit 1 when the store cannot be read, 2 on bad input."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        manifest = export(Database(args.store), args.output, args.model)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (StoreUnavailableError, StoreSchemaError) as error:
        print(f"error: the prediction store cannot be read: {error}", file=sys.stderr)
        return 1
    print(f"exported {len(manifest['images'])} labelled images into {args.output}: "
          + (", ".join(f"{name} {count}" for name, count in manifest["classes"].items())
             or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
