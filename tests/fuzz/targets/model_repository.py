"""Fuzz target: the metadata.json of a version folder that the service's model repository reads.

A version with hostile metadata must be skipped with a logged reason; the poll itself must
neither raise nor serve it. The folder's model.tflite is not a model, so no input can load,
but it is there: a version without it is skipped before its metadata is read at all.
"""

import functools
import logging
import tempfile
from pathlib import Path

from service.models.artifact import TFLITE_FILE
from service.models.repository import ModelRepository

DICTIONARY = "json.dict"


class Records(logging.Handler):
    """Keeps the service's log records instead of printing them (thousands a second)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@functools.cache
def models_folder():
    """A models folder with one model and one version, 1, whose model.tflite is not a model;
    and the log's records."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-model-repository-"))
    (folder / "fuzzed" / "1").mkdir(parents=True)
    (folder / "fuzzed" / "1" / TFLITE_FILE).write_bytes(b"TFL3 not a model")
    log = Records()
    logging.getLogger("service").addHandler(log)
    logging.getLogger("service").propagate = False
    return folder, log


def test_one_input(data):
    """Poll a models folder whose one version holds `data` as its metadata.json."""
    folder, log = models_folder()
    (folder / "fuzzed" / "1" / "metadata.json").write_bytes(data)
    log.records.clear()
    repository = ModelRepository(str(folder), "fuzzed")
    if repository.refresh() or repository.default.table.stable is not None:
        raise AssertionError("a version whose model.tflite is not a model was served")
    if not any(getattr(record, "model_version", None) == 1 for record in log.records):
        raise AssertionError("the version was skipped without a logged reason")
    if any("it has no" in record.getMessage() for record in log.records):
        raise AssertionError("the version was skipped for a missing file: this target no "
                             "longer reaches the metadata reader")
