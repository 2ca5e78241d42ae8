"""Fuzz target: the body of POST /feedback, read and then applied to a real (SQLite) store.

Whatever the body, reading it raises only FeedbackError (a 400), and applying what was read
raises only FeedbackError (400, 404 or 409): never a database error, never a 500. What is
written is what was sent: a prediction's true class is the first one given for it.
"""

import functools
import json
import tempfile
import time

import numpy as np

from service.models.routing import Route
from service.store.database import Database
from service.store.feedback import give_feedback, parse_feedback
from service.store.recorder import Origin, PredictionRecorder
from tests.unit.fakes import ColourModel

DICTIONARY = "json.dict"
MAX_ITEMS = 8


@functools.cache
def store() -> tuple[Database, str]:
    """A store in a temporary folder holding one prediction; its id (made before the clock
    can call it recent, so unknown ids never wait for their row)."""
    database = Database(tempfile.mkdtemp(prefix="fuzz-feedback-"))
    recorder = PredictionRecorder(database, 0.0, 10, 1_000_000, 30, 0)
    model = ColourModel()
    pixels = np.zeros((1, 16, 16, 3), np.uint8)
    ids = recorder.record(Route(model.name, model, "stable"), pixels, model.infer(pixels),
                          Origin("/predict", "fuzz", time.perf_counter()))
    assert recorder.flush()
    return database, ids[0]


def test_one_input(data):
    """Read the body; apply it with the stored prediction's id put in where the body says
    "ID", so that the fuzzer reaches the found, conflicting and repeated cases."""
    database, known = store()
    items, _ = parse_feedback(data.replace(b"ID", known.encode()), MAX_ITEMS)
    if not 1 <= len(items) <= MAX_ITEMS:
        raise AssertionError(f"{len(items)} items read, outside 1..{MAX_ITEMS}")
    results = give_feedback(database, items, 30)
    with database.transaction() as session:
        kept = dict(session.run("SELECT prediction_id, true_class FROM feedback"))
    for result in results:
        if kept.get(result["prediction_id"]) != result["class"]:
            raise AssertionError("the answer's class is not the one kept")
    json.dumps(results)
