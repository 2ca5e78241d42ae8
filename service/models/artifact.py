"""The model artifact both programs share: what a version folder under models/<name>/ holds.

Training writes these folders and the service reads them; neither spells a file name
or the rule for a version on its own. This module imports no TensorFlow.
"""

import os
import re
import tempfile

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
METADATA_FILE = "metadata.json"
# A TensorFlow SavedModel in the version folder itself, so models/<name>/ is a TF Serving base path.
SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_VARIABLES = "variables"
TRAINING_CURVES_FILE = "training-curves.png"
CONFUSION_MATRIX_FILE = "confusion-matrix.png"
# Accuracy against confidence before and after temperature scaling (model_training/calibration.py).
RELIABILITY_DIAGRAM_FILE = "reliability-diagram.png"
# A version is written under this prefix and renamed to its number once complete.
TEMPORARY_PREFIX = ".tmp-"
# What the service needs to serve a version: the labels and input size, and the LiteRT model.
SERVING_FILES = (METADATA_FILE, TFLITE_FILE)
# What every version that training publishes holds.
PUBLISHED_FILES = (KERAS_FILE, *SERVING_FILES, SAVED_MODEL_FILE, SAVED_MODEL_VARIABLES)
# Beside the versions of a model: its serving policy (service/models/policy.py), and the
# lock that release commands take to change it one at a time.
POLICY_FILE = "serving.json"
POLICY_LOCK_FILE = ".serving.lock"
# A model's name, the folder under the models folder: it appears in URLs and metric labels.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def model_names(model_dir: str | os.PathLike) -> list[str]:
    """The models under `model_dir`: every folder with a usable name, sorted."""
    return sorted(entry.name for entry in os.scandir(model_dir)
                  if MODEL_NAME.match(entry.name) and entry.is_dir())


def version_number(name: str) -> int | None:
    """The version a folder name stands for: a positive integer in plain digits, else None."""
    if name.isascii() and name.isdigit() and int(name) > 0:
        return int(name)
    return None


def published_versions(versions_dir: str | os.PathLike) -> list[int]:
    """Every version folder under `versions_dir`, complete or not, oldest first."""
    try:
        entries = list(os.scandir(versions_dir))
    except OSError:
        return []
    return sorted(number for entry in entries
                  if (number := version_number(entry.name)) is not None and entry.is_dir())


def missing_files(folder: str | os.PathLike, required=SERVING_FILES) -> list[str]:
    """The names in `required` that `folder` lacks."""
    return [name for name in required if not os.path.exists(os.path.join(folder, name))]


def complete_versions(versions_dir: str | os.PathLike, required=SERVING_FILES) -> list[int]:
    """The versions under `versions_dir` that hold every file in `required`, newest first."""
    return [version for version in reversed(published_versions(versions_dir))
            if not missing_files(os.path.join(versions_dir, str(version)), required)]


def replace_file(folder: str, name: str, content: bytes) -> None:
    """Write `folder/name` whole under a temporary name, then rename it into place.

    A reader never sees half a file, also when a file of a published version is replaced.
    """
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, os.path.join(folder, name))
    except BaseException:
        os.unlink(temporary)
        raise
