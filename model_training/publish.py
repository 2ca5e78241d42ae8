"""Publish a trained model as the next version folder, atomically."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable

from service.models.artifact import (
    METADATA_FILE,
    TEMPORARY_PREFIX,
    published_versions,
    replace_file,
)


class PublishError(Exception):
    """The model could not be written to the output folder."""


def check_writable(model_dir: str) -> None:
    """Fail before training, not after, when the output folder cannot be written.

    Folders this check had to create are removed again, so a run that fails
    later leaves nothing behind; publishing creates them for good.
    """
    created = []
    folder = os.path.abspath(model_dir)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.rmdir(make_staging_folder(model_dir))
    finally:
        for folder in created:
            try:
                os.rmdir(folder)
            except OSError:
                break


def make_staging_folder(model_dir: str) -> str:
    """Create `model_dir` if needed and an empty temporary folder inside it; return its path."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        return tempfile.mkdtemp(dir=model_dir, prefix=TEMPORARY_PREFIX)
    except OSError as error:
        raise PublishError(f"cannot write to output folder {model_dir!r}: "
                           f"{error.strerror}") from None


def publish(model_dir: str,
            write_files: Callable[[str, int], None]) -> tuple[str, int]:
    """Write a version with `write_files(folder, version)`, then rename it into place.

    The folder gets its number only once every file is complete, so a reader
    polling `model_dir` never sees half a version.
    """
    staging = make_staging_folder(model_dir)
    try:
        os.chmod(staging, 0o755)
        version = (published_versions(model_dir) or [0])[-1] + 1
        write_files(staging, version)
        while True:
            target = os.path.join(model_dir, str(version))
            try:
                os.rename(staging, target)
                return target, version
            except OSError:
                if not os.path.exists(target):
                    raise
            # Another run took this number meanwhile: take the next one and say so inside.
            version += 1
            write_files(staging, version)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise PublishError(f"could not publish to {model_dir!r}: {error}") from None
        raise


def write_metadata(folder: str, metadata: dict) -> None:
    """Write metadata.json, readable by people and by the service."""
    replace_file(folder, METADATA_FILE, (json.dumps(metadata, indent=2) + "\n").encode())
