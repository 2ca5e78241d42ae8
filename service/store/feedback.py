"""Feedback: the true class of earlier predictions, by prediction id (POST /feedback).

No HTTP here: the route (service/http/routes.py) hands the body over and maps FeedbackError's
kind to a status. A prediction takes one true class: the same class again is accepted (clients
and proxies retry), a different one is a conflict. A list is all or nothing, checked before
anything is written, so a client can resend it whole after fixing the item named.
"""

import hashlib
import json
import time
from dataclasses import dataclass

from service.store.database import Database
from service.store.maintenance import SECONDS_PER_DAY
from service.store.recorder import FLUSH_SECONDS, made_at

# Class names and ids longer than this are no class or id of ours.
MAX_FIELD_CHARACTERS = 200
# A prediction is written a moment after its answer (service/store/recorder.py): feedback
# sent at once may wait this long for the row before it is called unknown.
ROW_WAIT_SECONDS = 4 * FLUSH_SECONDS + 0.5

INVALID, NOT_FOUND, UNKNOWN_CLASS, CONFLICT = (
    "invalid_feedback", "prediction_not_found", "unknown_class", "feedback_conflict")


class FeedbackError(Exception):
    """Feedback that cannot be taken; `kind` says why, the message which item and what to do."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Feedback:
    """One prediction's true class, as a client sent it."""

    prediction_id: str
    true_class: str


def parse_feedback(body: bytes, max_items: int) -> tuple[list[Feedback], bool]:
    """The items of a feedback body, one object or a list of them; and whether it was a list."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise FeedbackError(INVALID, 'Send JSON: {"prediction_id": "...", "class": "..."}, '
                                     "or a list of such objects.") from None
    many = isinstance(parsed, list)
    items = parsed if many else [parsed]
    if not items:
        raise FeedbackError(INVALID, "The list of feedback is empty.")
    if len(items) > max_items:
        raise FeedbackError(INVALID, f"The list holds {len(items)} items; the limit is "
                                     f"{max_items} (FEEDBACK_MAX_ITEMS).")
    return [_item(item, index if many else None) for index, item in enumerate(items)], many


def _item(item, index: int | None) -> Feedback:
    where = "the feedback" if index is None else f"feedback item {index}"
    if not isinstance(item, dict) or set(item) != {"prediction_id", "class"}:
        raise FeedbackError(INVALID, f'{where.capitalize()} must be an object with exactly '
                                     '"prediction_id" and "class".')
    for key in ("prediction_id", "class"):
        value = item[key]
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_FIELD_CHARACTERS:
            raise FeedbackError(INVALID, f'"{key}" of {where} must be a string of 1 to '
                                         f"{MAX_FIELD_CHARACTERS} characters.")
        if not _is_text(value):
            raise FeedbackError(INVALID, f'"{key}" of {where} holds a control character or '
                                         "an unpaired surrogate: no id or class does.")
    return Feedback(item["prediction_id"], item["class"])


def _is_text(value: str) -> bool:
    """Printable Unicode that UTF-8 can carry: what both databases store as TEXT (PostgreSQL
    refuses NUL, SQLite's driver refuses unpaired surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return value.isprintable()


def key_id(key: str) -> str:
    """What is kept of the API key that sent feedback: a hash that names it, never the key."""
    return hashlib.sha256(b"feedback-key\0" + key.encode()).hexdigest()[:16]


def give_feedback(database: Database, items: list[Feedback], retention_days: float,
                  sender: str | None = None) -> list[dict]:
    """Record the true classes; for each item, whether the answer was right and whether it
    is new (False: the same feedback came before)."""
    deadline = time.monotonic() + ROW_WAIT_SECONDS
    while True:
        try:
            with database.transaction() as session:
                found = _predictions(session, items,
                                     time.time() - retention_days * SECONDS_PER_DAY)
                missing = [item for item in items if item.prediction_id not in found]
                if not missing:
                    return _record(session, items, found, sender)
        except _RacedError:
            continue  # read again: the other feedback is now there, same (200) or not (409)
        if time.monotonic() >= deadline or not any(map(_may_be_on_the_way, missing)):
            raise FeedbackError(NOT_FOUND, f"No prediction has the id "
                                           f"{missing[0].prediction_id[:40]!r}: it is unknown, "
                                           "or older than the store keeps predictions.")
        time.sleep(FLUSH_SECONDS)


def _may_be_on_the_way(item: Feedback) -> bool:
    """Whether an unknown id was made so recently that its row may not be written yet; an id
    the service did not make, or an old one, is unknown at once."""
    made = made_at(item.prediction_id)
    return made is not None and -1 <= time.time() - made <= ROW_WAIT_SECONDS


def _predictions(session, items: list[Feedback], cutoff: float) -> dict[str, tuple]:
    """The rows of the items' predictions still kept: id -> (model, version, label, top1,
    answered unknown, classes, earlier true class)."""
    ids = sorted({item.prediction_id for item in items})
    marks = ", ".join("?" for _ in ids)
    rows = session.run(
        "SELECT p.prediction_id, p.model, p.version, p.version_label, p.top1, "
        "p.answered_unknown, v.classes, "
        "f.true_class FROM predictions p "
        "LEFT JOIN model_versions v ON v.model = p.model AND v.version = p.version "
        "LEFT JOIN feedback f ON f.prediction_id = p.prediction_id "
        f"WHERE p.prediction_id IN ({marks}) AND p.created_at >= ?", (*ids, cutoff))
    return {row[0]: row[1:] for row in rows}


def _record(session, items: list[Feedback], found: dict, sender: str | None) -> list[dict]:
    """Check every item, then write the new ones: all or nothing."""
    results, new, given = [], [], {}
    for item in items:
        model, version, label, top1, unknown, classes, earlier = found[item.prediction_id]
        if classes is not None and item.true_class not in json.loads(classes):
            raise FeedbackError(UNKNOWN_CLASS, f"{item.true_class[:40]!r} is not a class of "
                                               f"model {model!r} version {version}; its classes: "
                                               f"{', '.join(json.loads(classes))}.")
        earlier = given.get(item.prediction_id, earlier)
        if earlier is not None and earlier != item.true_class:
            raise FeedbackError(CONFLICT, f"Prediction {item.prediction_id[:40]!r} already has "
                                          f"the true class {earlier!r}; a prediction takes one.")
        if earlier is None:
            new.append((item.prediction_id, item.true_class, time.time(), sender))
            given[item.prediction_id] = item.true_class
        results.append({"prediction_id": item.prediction_id, "class": item.true_class,
                        "correct": top1 == item.true_class and not unknown,
                        "new": earlier is None,
                        "model": model, "version": version, "version_label": label})
    for row in new:
        session.run("INSERT INTO feedback (prediction_id, true_class, created_at, key_id) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING", row)
        if session.changed == 0:
            raise _RacedError()  # another process's feedback for it committed after we read
    return results


class _RacedError(Exception):
    """Feedback for the same prediction was written between our read and our write."""
